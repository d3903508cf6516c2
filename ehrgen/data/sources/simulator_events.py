"""The simulator's procedures and prescriptions: what each latent condition is treated with.

Data read by :mod:`ehrgen.data.sources.simulator`, in the emission-group syntax of
:mod:`ehrgen.data.sources.simulator_codes` (one group per line, ``[!]prob item[:weight] ...``:
with probability ``prob`` the group emits one of its items; ``!`` marks the principal procedure,
coded first). Procedure items are ICD-9-CM volume 3 codes as MIMIC-III writes them (no dot,
leading zeros kept); medication items are keys of :data:`DRUG_TABLE`.

- ``CONDITION_EVENTS[name] = (procedures, medications)``. A chronic condition's procedures are
  drawn at every admission of a patient who has it (dialysis at each stay); its medications are
  chosen once per patient (home medicines) and re-ordered at each admission with probability
  ``HOME_MEDICINE_PERSIST``. An acute condition's are drawn afresh at each admission it is
  active in.
- ``BACKGROUND_PROCEDURES`` / ``BACKGROUND_MEDICATIONS``: what any adult admission may get
  (lines, transfusions, fluids, electrolytes, bowel regimen, analgesia), one Bernoulli per line.

Rates follow the MIMIC-III demo's frequencies loosely (venous catheterisation in ~40 % of
admissions, potassium chloride in about half). Measured on 50,000 simulated patients: 3.1
procedures, 16 distinct medicines and 34 prescription rows per admission (each medicine ordered
2.2 times); the MIMIC-III demo has 3.9 procedures, 34 distinct drug names and 81 prescription
rows per admission. The simulator prescribes less than MIMIC does: a sparser truth for the
medication metrics, and 3 million patients still make 190 million event rows.
"""

from __future__ import annotations

HOME_MEDICINE_PERSIST = 0.9
ORDERS_PER_MEDICINE = 1.2  # extra orders of a medicine within an admission: Poisson mean

# code|short title|long title (ICD-9-CM volume 3, FY2015)
PROCEDURE_TABLE = """
0017|Infusion of vasopressor|Infusion of vasopressor agent
0040|Procedure-one vessel|Procedure on single vessel
0045|Insert 1 vascular stent|Insertion of one vascular stent
0066|PTCA|Percutaneous transluminal coronary angioplasty [PTCA]
0124|Other craniotomy|Other craniotomy
0159|Other brain excision|Other excision or destruction of lesion or tissue of brain
0331|Spinal tap|Spinal tap
311|Temporary tracheostomy|Temporary tracheostomy
3322|Fiber-optic bronchoscopy|Fiber-optic bronchoscopy
3324|Closed bronchial biopsy|Closed [endoscopic] biopsy of bronchus
3404|Insert intercostal cath|Insertion of intercostal catheter for drainage
3491|Thoracentesis|Thoracentesis
3521|Opn/oth rep aort vlv-tis|Open and other replacement of aortic valve with tissue graft
3607|Ins drug-elut coronry st|Insertion of drug-eluting coronary artery stent(s)
3612|Aortocor bypas-2 cor art|(Aorto)coronary bypass of two coronary arteries
3613|Aortocor bypas-3 cor art|(Aorto)coronary bypass of three coronary arteries
3615|1 int mam-cor art bypass|Single internal mammary-coronary artery bypass
3722|Left heart cardiac cath|Left heart cardiac catheterization
3723|Rt/left heart card cath|Combined right and left heart cardiac catheterization
3891|Arterial catheterization|Arterial catheterization
3892|Umbilical vein cath|Umbilical vein catheterization
3893|Venous cath NEC|Venous catheterization, not elsewhere classified
3895|Ven cath renal dialysis|Venous catheterization for renal dialysis
3897|CV cath plcmt w guidance|Central venous catheter placement with guidance
3950|Angio oth non-coronary|Angioplasty of other non-coronary vessel(s)
3961|Extracorporeal circulat|Extracorporeal circulation auxiliary to open heart surgery
3995|Hemodialysis|Hemodialysis
4131|Bone marrow biopsy|Biopsy of bone marrow
4233|Endosc destr esoph les|Endoscopic excision or destruction of lesion or tissue of esophagus
4311|Percu endosc gastrostomy|Percutaneous [endoscopic] gastrostomy [PEG]
4443|Endosc control gast hem|Endoscopic control of gastric or duodenal bleeding
4513|Sm bowel endoscopy NEC|Other endoscopy of small intestine
4516|EGD with closed biopsy|Esophagogastroduodenoscopy [EGD] with closed biopsy
4523|Colonoscopy|Colonoscopy
4562|Part sm bowel resect NEC|Other partial resection of small intestine
5011|Closed liver biopsy|Closed (percutaneous) [needle] biopsy of liver
5110|Endosc retro cholangiopa|Endoscopic retrograde cholangiopancreatography [ERCP]
5123|Laparoscopic cholecystec|Laparoscopic cholecystectomy
5491|Percu abdominal drainage|Percutaneous abdominal drainage
5794|Ins indwelling urin cath|Insertion of indwelling urinary catheter
6029|Other transureth prostat|Other transurethral prostatectomy
640|Circumcision|Circumcision
7309|Oth artific rupt membran|Other artificial rupture of membranes
7359|Manual assisted deliv NEC|Other manually assisted delivery
741|Low cervical c-section|Low cervical cesarean section
7935|Opn red-int fix femur|Open reduction of fracture with internal fixation, femur
8151|Total hip replacement|Total hip replacement
8154|Total knee replacement|Total knee replacement
8622|Exc wound debridement|Excisional debridement of wound, infection, or burn
8703|C.A.T. scan of head|Computerized axial tomography of head
8741|C.A.T. scan of thorax|Computerized axial tomography of thorax
8856|Coronar arteriogr-2 cath|Coronary arteriography using two catheters
8872|Dx ultrasound-heart|Diagnostic ultrasound of heart
8891|Brain MRI|Magnetic resonance imaging of brain and brain stem
9229|Radiotherapeut proc NEC|Other radiotherapeutic procedure
9390|Non-invasive mech vent|Non-invasive mechanical ventilation
9604|Insert endotracheal tube|Insertion of endotracheal tube
9607|Insert gastric tube NEC|Insertion of other (naso-)gastric tube
966|Entral infus nutrit sub|Enteral infusion of concentrated nutritional substances
9671|Cont inv mec ven <96 hrs|Continuous invasive mechanical ventilation for less than 96 consecutive hours
9672|Cont inv mec ven 96+ hrs|Continuous invasive mechanical ventilation for 96 consecutive hours or more
9904|Packed cell transfusion|Transfusion of packed cells
9905|Platelet transfusion|Transfusion of platelets
9907|Serum transfusion NEC|Transfusion of other serum
9915|Parent infus nutrit sub|Parenteral infusion of concentrated nutritional substances
9925|Inject ca chemother NEC|Injection or infusion of cancer chemotherapeutic substance
9955|Vaccination NEC|Prophylactic administration of vaccine against other diseases
9962|Heart countershock NEC|Other electric countershock of heart
9983|Other phototherapy|Other phototherapy
"""

# key|DRUG|DRUG_TYPE|PROD_STRENGTH|DOSE_VAL_RX|DOSE_UNIT_RX|ROUTE, names as MIMIC-III writes them
DRUG_TABLE = """
kcl|Potassium Chloride|MAIN|20mEq Packet|40|mEq|PO
d5w|D5W|BASE|250mL Bag|250|mL|IV
ns|0.9% Sodium Chloride|MAIN|1000mL Bag|1000|mL|IV
ns_base|NS|BASE|500mL Bag|500|mL|IV
iso_dextrose|Iso-Osmotic Dextrose|BASE|50mL Bag|50|mL|IV
sw|SW|BASE|100mL Bag|100|mL|IV
flush|Sodium Chloride 0.9%  Flush|MAIN|10 mL Syringe|3|mL|IV
lr|LR|BASE|1000mL Bag|1000|mL|IV
mag|Magnesium Sulfate|MAIN|2 g / 50 mL Premix Bag|2|gm|IV
calcium|Calcium Gluconate|MAIN|1g Vial|1|gm|IV
kphos|Potassium Phosphate|MAIN|3mmol/mL-4.4mEq/mL Vial|15|mmol|IV
neutraphos|Neutra-Phos|MAIN|1 Packet|1|PKT|PO
acetaminophen|Acetaminophen|MAIN|325mg Tab|650|mg|PO
morphine|Morphine Sulfate|MAIN|2mg Syringe|2|mg|IV
hydromorphone|HYDROmorphone (Dilaudid)|MAIN|2mg/mL Syringe|0.5|mg|IV
oxycodone|OxycoDONE (Immediate Release) |MAIN|5mg Tab|5|mg|PO
fentanyl|Fentanyl Citrate|MAIN|100mcg/2mL Amp|25|mcg|IV
docusate|Docusate Sodium|MAIN|100mg Cap|100|mg|PO
senna|Senna|MAIN|1 Tab|1|TAB|PO
bisacodyl|Bisacodyl|MAIN|5 mg Tab|10|mg|PO
heparin|Heparin|MAIN|5000 Units / mL- 1mL Vial|5000|UNIT|SC
pantoprazole|Pantoprazole|MAIN|40mg Tab|40|mg|PO
ondansetron|Ondansetron|MAIN|2mg/mL-2mL|4|mg|IV
lorazepam|Lorazepam|MAIN|1mg Tab|1|mg|PO
insulin|Insulin|MAIN|100 Units / mL - 10 mL Vial|0|UNIT|SC
multivitamin|Multivitamins|MAIN|1 Tab|1|TAB|PO
famotidine|Famotidine|MAIN|20mg Tab|20|mg|PO
furosemide|Furosemide|MAIN|20mg Tab|20|mg|PO
metoprolol|Metoprolol Tartrate|MAIN|25mg Tab|25|mg|PO
lisinopril|Lisinopril|MAIN|10mg Tab|10|mg|PO
amlodipine|Amlodipine|MAIN|5mg Tab|5|mg|PO
hctz|Hydrochlorothiazide|MAIN|25mg Tab|25|mg|PO
metformin|MetFORMIN (Glucophage)|MAIN|500 mg Tab|500|mg|PO
glipizide|GlipiZIDE|MAIN|5mg Tab|5|mg|PO
atorvastatin|Atorvastatin|MAIN|10mg Tab|10|mg|PO
simvastatin|Simvastatin|MAIN|20mg Tab|20|mg|PO
aspirin|Aspirin|MAIN|325mg Tab|325|mg|PO
clopidogrel|Clopidogrel Bisulfate|MAIN|75mg Tab|75|mg|PO
nitroglycerin|Nitroglycerin SL|MAIN|0.4mg SL Tab|0.4|mg|SL
warfarin|Warfarin|MAIN|5mg Tab|5|mg|PO
digoxin|Digoxin|MAIN|0.125mg Tab|0.125|mg|PO
diltiazem|Diltiazem|MAIN|30mg Tab|30|mg|PO
amiodarone|Amiodarone HCl|MAIN|200mg Tab|200|mg|PO
spironolactone|Spironolactone|MAIN|25mg Tab|25|mg|PO
carvedilol|Carvedilol|MAIN|6.25mg Tab|6.25|mg|PO
albuterol|Albuterol 0.083% Neb Soln|MAIN|2.5mg/3mL Neb|1|NEB|IH
ipratropium|Ipratropium Bromide Neb|MAIN|0.02% Neb Soln|1|NEB|IH
tiotropium|Tiotropium Bromide|MAIN|18mcg Cap|1|CAP|IH
fluticasone|Fluticasone-Salmeterol Diskus (250/50) |MAIN|1 Diskus|1|INH|IH
prednisone|PredniSONE|MAIN|20mg Tab|40|mg|PO
methylpred|Methylprednisolone Sodium Succ|MAIN|125mg Vial|125|mg|IV
lactulose|Lactulose|MAIN|30mL UD Cup|30|mL|PO
rifaximin|Rifaximin|MAIN|200mg Tab|400|mg|PO
nadolol|Nadolol|MAIN|20mg Tab|20|mg|PO
octreotide|Octreotide Acetate|MAIN|100mcg/mL Amp|50|mcg|IV
donepezil|Donepezil|MAIN|5mg Tab|5|mg|PO
quetiapine|Quetiapine Fumarate|MAIN|25mg Tab|25|mg|PO
haloperidol|Haloperidol|MAIN|5mg/mL Amp|2|mg|IV
sertraline|Sertraline|MAIN|50mg Tab|50|mg|PO
citalopram|Citalopram Hydrobromide|MAIN|20mg Tab|20|mg|PO
levothyroxine|Levothyroxine Sodium|MAIN|50mcg Tab|50|mcg|PO
omeprazole|Omeprazole|MAIN|20mg Cap|20|mg|PO
gabapentin|Gabapentin|MAIN|300mg Cap|300|mg|PO
allopurinol|Allopurinol|MAIN|100mg Tab|100|mg|PO
levetiracetam|LeVETiracetam|MAIN|500mg Tab|500|mg|PO
phenytoin|Phenytoin Sodium Extended|MAIN|100mg Cap|100|mg|PO
carbidopa|Carbidopa-Levodopa (25-100)|MAIN|1 Tab|1|TAB|PO
tacrolimus|Tacrolimus|MAIN|1mg Cap|2|mg|PO
mycophenolate|Mycophenolate Mofetil|MAIN|500mg Tab|1000|mg|PO
sevelamer|Sevelamer HCl|MAIN|800mg Tab|800|mg|PO
epoetin|Epoetin Alfa|MAIN|10,000 Unit/mL Vial|10000|UNIT|SC
ferrous|Ferrous Sulfate|MAIN|325mg Tab|325|mg|PO
tamsulosin|Tamsulosin HCl|MAIN|0.4mg Cap|0.4|mg|PO
emtricitabine|Emtricitabine-Tenofovir (Truvada)|MAIN|1 Tab|1|TAB|PO
nicotine|Nicotine Patch|MAIN|14 mg/24 hr Patch|1|PTCH|TD
thiamine|Thiamine|MAIN|100mg Tab|100|mg|PO
folic|FoLIC Acid|MAIN|1mg Tab|1|mg|PO
methadone|Methadone HCl|MAIN|10mg Tab|10|mg|PO
naloxone|Naloxone|MAIN|0.4mg/1mL Vial|0.4|mg|IV
calcium_carb|Calcium Carbonate|MAIN|500mg Tab|500|mg|PO
vitamin_d|Vitamin D|MAIN|400 Unit Tab|800|UNIT|PO
enoxaparin|Enoxaparin Sodium|MAIN|40mg/0.4mL Syringe|40|mg|SC
vancomycin|Vancomycin|MAIN|1g Frozen Bag|1000|mg|IV
piptazo|Piperacillin-Tazobactam Na|MAIN|4.5 g Vial|4.5|gm|IV
cefepime|CefePIME|MAIN|2 g Vial|2|gm|IV
ceftriaxone|CeftriaXONE|MAIN|1g Frozen Bag|1|gm|IV
levofloxacin|Levofloxacin|MAIN|750mg Premix|750|mg|IV
azithromycin|Azithromycin|MAIN|500 mg Vial|500|mg|IV
ciprofloxacin|Ciprofloxacin HCl|MAIN|500mg Tab|500|mg|PO
metronidazole|MetRONIDAZOLE (FLagyl)|MAIN|500mg Tab|500|mg|PO
oral_vanco|Vancomycin Oral Liquid|MAIN|250mg/5mL Oral Liquid|125|mg|PO
cefazolin|CeFAZolin|MAIN|1 g Vial|1|gm|IV
meropenem|Meropenem|MAIN|500mg Vial|1000|mg|IV
norepinephrine|Norepinephrine|MAIN|4mg/250mL Premix|0.06|mcg/kg/min|IV
vasopressin|Vasopressin|MAIN|20 Units Vial|2.4|UNIT|IV
phenylephrine|Phenylephrine|MAIN|10mg/mL Vial|1|mcg/kg/min|IV
propofol|Propofol|MAIN|100mL Vial|10|mcg/kg/min|IV
midazolam|Midazolam|MAIN|100mg/100mL Premix|2|mg/hr|IV
sodium_bicarb|Sodium Bicarbonate|MAIN|50mEq Syringe|50|mEq|IV
dextrose50|Dextrose 50%|MAIN|25 g / 50 mL Syringe|12.5|gm|IV
glucagon|Glucagon|MAIN|1mg Kit|1|mg|IM
alteplase|Alteplase|MAIN|100mg Vial|90|mg|IV
heparin_drip|Heparin (Porcine)|MAIN|25,000 unit Premix Bag|1000|UNIT/HR|IV
esmolol|Esmolol|MAIN|2500mg/250mL Premix|50|mcg/kg/min|IV
labetalol|Labetalol|MAIN|5mg/mL Vial|10|mg|IV
ketorolac|Ketorolac|MAIN|30 mg/mL Vial|15|mg|IV
oxytocin|Oxytocin|MAIN|10 Unit/mL Vial|20|UNIT|IV
ibuprofen|Ibuprofen|MAIN|600mg Tab|600|mg|PO
prenatal|Prenatal Vitamins|MAIN|1 Tab|1|TAB|PO
phytonadione|Phytonadione|MAIN|1 mg/0.5 mL Syringe|1|mg|IM
erythromycin_eye|Erythromycin 0.5% Ophth Oint|MAIN|3.5g Tube|0.5|in|OU
hep_b_vaccine|Hepatitis B Vaccine|MAIN|10mcg/0.5mL Syringe|0.5|mL|IM
ampicillin|Ampicillin Sodium|MAIN|500mg Vial|50|mg/kg|IV
gentamicin|Gentamicin|MAIN|10mg/mL Vial|4|mg/kg|IV
caffeine|Caffeine Citrate|MAIN|20mg/mL Vial|5|mg/kg|IV
beractant|Beractant|MAIN|4mL Vial|4|mL/kg|ET
tpn_neonatal|Neonatal Parenteral Nutrition|BASE|Bag|1|BAG|IV
dextrose10|Dextrose 10%|BASE|250mL Bag|250|mL|IV
chemo|Cisplatin|MAIN|100mg/100mL Vial|75|mg/m2|IV
filgrastim|Filgrastim|MAIN|300mcg/0.5mL Syringe|300|mcg|SC
zolpidem|Zolpidem Tartrate|MAIN|5mg Tab|5|mg|PO
"""

BACKGROUND_PROCEDURES = """
0.40 3893
0.15 9904
0.09 3891
0.08 9604
0.07 9671
0.05 9672
0.05 9607
0.05 966
0.04 3897
0.04 8872
0.04 9907
0.02 9905
0.03 8703
0.02 8741
0.03 9915
0.01 0331
"""

BACKGROUND_MEDICATIONS = """
0.55 kcl
0.45 d5w
0.42 ns
0.38 ns_base
0.28 iso_dextrose
0.25 sw
0.50 flush
0.18 lr
0.55 mag
0.20 calcium
0.12 kphos
0.10 neutraphos
0.55 acetaminophen
0.30 morphine
0.20 hydromorphone
0.20 oxycodone
0.15 fentanyl
0.45 docusate
0.45 senna
0.30 bisacodyl
0.50 heparin
0.35 pantoprazole
0.12 famotidine
0.35 ondansetron
0.20 lorazepam
0.30 insulin
0.12 multivitamin
0.10 zolpidem
0.10 enoxaparin
0.10 propofol
0.08 midazolam
0.06 sodium_bicarb
0.08 furosemide
0.06 metoprolol
"""

# fmt: off
CONDITION_EVENTS: dict[str, tuple[str, str]] = {
    # newborns
    "birth": ("0.7 9955", "1.0 phytonadione\n0.95 erythromycin_eye\n0.7 hep_b_vaccine"),
    "prematurity": ("0.5 3892\n0.35 9915\n0.25 9604\n0.2 9672:60 9671:40\n0.4 9390",
                    "0.6 caffeine\n0.4 tpn_neonatal\n0.5 dextrose10\n0.2 beractant"),
    "neonatal_jaundice": ("0.8 9983", ""),
    "neonatal_sepsis_workup": ("", "1.0 ampicillin\n1.0 gentamicin"),
    "neonatal_respiratory": ("0.6 9390\n0.25 9604\n0.2 9671", "0.3 beractant\n0.3 caffeine"),
    "circumcision": ("1.0 640", ""),
    # chronic, adults: home medicines (chosen once per patient) and recurring procedures
    "tobacco": ("", "0.4 nicotine"),
    "alcohol": ("", "0.8 thiamine\n0.6 folic\n0.5 multivitamin"),
    "substance": ("", "0.4 methadone\n0.2 naloxone"),
    "hypertension": ("", "0.75 lisinopril:40 amlodipine:35 hctz:25\n0.5 metoprolol"),
    "diabetes": ("", "0.9 insulin\n0.5 metformin:70 glipizide:30"),
    "hyperlipidemia": ("", "0.85 atorvastatin:55 simvastatin:45"),
    "cad": ("0.1 8856", "0.9 aspirin\n0.6 metoprolol\n0.4 clopidogrel\n0.3 nitroglycerin\n0.5 atorvastatin"),
    "ckd": ("0.12 3995\n0.04 3895", "0.3 sevelamer\n0.25 epoetin\n0.3 calcium_carb"),
    "afib": ("0.04 9962", "0.7 warfarin\n0.6 metoprolol:50 diltiazem:35 amiodarone:15\n0.15 digoxin"),
    "heart_failure": ("0.2 8872", "0.95 furosemide\n0.5 carvedilol:60 metoprolol:40\n0.35 spironolactone\n0.3 lisinopril"),
    "valvular": ("0.3 8872", "0.3 warfarin"),
    "pacemaker": ("", "0.2 warfarin"),
    "pvd": ("0.05 3950", "0.7 aspirin\n0.3 clopidogrel"),
    "copd": ("", "0.85 albuterol\n0.8 ipratropium\n0.4 tiotropium:50 fluticasone:50\n0.2 prednisone"),
    "asthma": ("", "0.9 albuterol\n0.5 fluticasone"),
    "pulm_htn": ("0.1 3723", "0.5 furosemide"),
    "ild": ("0.05 3324", "0.4 prednisone"),
    "hep_c": ("0.03 5011", ""),
    "cirrhosis": ("0.2 5491\n0.05 4233", "0.85 lactulose\n0.6 rifaximin\n0.4 nadolol\n0.5 spironolactone"),
    "dementia": ("", "0.6 donepezil\n0.4 quetiapine"),
    "parkinson": ("", "0.95 carbidopa"),
    "stroke_history": ("", "0.7 aspirin\n0.3 clopidogrel\n0.5 atorvastatin"),
    "depression": ("", "0.7 sertraline:50 citalopram:50"),
    "psychotic": ("", "0.8 quetiapine:60 haloperidol:40"),
    "hypothyroid": ("", "0.95 levothyroxine"),
    "gerd": ("", "0.6 omeprazole:60 pantoprazole:40"),
    "osteoarthritis": ("0.04 8154:55 8151:45", "0.3 oxycodone"),
    "osteoporosis": ("", "0.7 calcium_carb\n0.6 vitamin_d"),
    "spine_pain": ("", "0.6 gabapentin\n0.4 oxycodone"),
    "anemia_chronic": ("0.1 9904", "0.5 ferrous"),
    "thrombophilia": ("", "0.7 warfarin"),
    "lung_cancer": ("0.08 3324\n0.1 3491", "0.1 chemo"),
    "breast_cancer": ("", "0.05 chemo"),
    "colon_cancer": ("0.1 4523", "0.05 chemo"),
    "gi_cancer": ("0.1 4516", "0.05 chemo"),
    "heme_cancer": ("0.15 4131\n0.2 9925\n0.2 9905", "0.3 filgrastim\n0.25 chemo"),
    "brain_tumor": ("0.1 0159\n0.1 8891", "0.6 levetiracetam"),
    "other_cancer": ("0.03 9229", ""),
    "hiv": ("", "0.8 emtricitabine"),
    "transplant": ("", "0.9 tacrolimus\n0.8 mycophenolate\n0.5 prednisone"),
    "bph": ("0.02 6029", "0.7 tamsulosin"),
    "gout": ("", "0.7 allopurinol"),
    "epilepsy": ("", "0.9 levetiracetam:70 phenytoin:30"),
    "neuro_disability": ("0.05 4311", ""),
    "chronic_pancreatitis": ("", "0.4 oxycodone"),
    "neuropathy_misc": ("", "0.5 gabapentin"),
    # acute, per admission
    "sepsis": ("0.6 0017\n0.5 3893\n0.3 3891\n0.25 9604\n0.3 9672:50 9671:50",
               "0.9 vancomycin\n0.85 piptazo:55 cefepime:25 meropenem:20\n0.6 norepinephrine\n0.2 vasopressin\n0.6 lr"),
    "pneumonia": ("0.1 3322", "0.9 ceftriaxone:45 levofloxacin:35 piptazo:20\n0.5 azithromycin\n0.3 vancomycin"),
    "aspiration": ("0.2 9604", "0.8 piptazo:60 metronidazole:40"),
    "uti": ("0.2 5794", "0.85 ceftriaxone:60 ciprofloxacin:40"),
    "acute_mi": ("!0.65 8856\n0.6 3722\n0.5 0066\n0.45 3607:80 0045:20\n0.45 0040\n0.3 8872",
                 "0.95 aspirin\n0.8 heparin_drip\n0.7 clopidogrel\n0.8 atorvastatin\n0.7 metoprolol\n0.4 nitroglycerin"),
    "chf_exacerbation": ("0.3 8872\n0.2 9390", "0.95 furosemide\n0.3 metoprolol"),
    "arrhythmia": ("0.15 9962", "0.5 amiodarone:40 diltiazem:30 esmolol:30\n0.3 heparin_drip"),
    "aki": ("0.1 3995\n0.06 3895", "0.3 sodium_bicarb"),
    "resp_failure": ("0.7 9604\n0.75 9671:50 9672:50\n0.12 311\n0.1 4311\n0.15 9390",
                     "0.5 propofol\n0.4 fentanyl\n0.3 midazolam"),
    "copd_exacerbation": ("0.3 9390", "0.9 albuterol\n0.8 ipratropium\n0.8 prednisone:60 methylpred:40\n0.6 azithromycin:50 levofloxacin:50"),
    "asthma_exacerbation": ("0.1 9390", "0.95 albuterol\n0.8 methylpred:50 prednisone:50"),
    "gi_bleed": ("!0.6 4513:50 4516:50\n0.2 4523\n0.2 4443\n0.6 9904", "0.9 pantoprazole\n0.3 octreotide"),
    "liver_decompensation": ("0.4 5491\n0.2 4233", "0.9 lactulose\n0.4 octreotide\n0.5 ceftriaxone"),
    "alcohol_withdrawal": ("", "0.95 lorazepam\n0.8 thiamine\n0.6 folic"),
    "stroke": ("0.7 8703\n0.4 8891\n0.1 4311", "0.15 alteplase\n0.7 aspirin\n0.5 atorvastatin\n0.3 labetalol"),
    "fall_injury": ("0.6 8703\n0.15 7935\n0.08 8151", "0.4 oxycodone\n0.3 enoxaparin"),
    "trauma": ("0.6 8703\n0.3 8741\n0.05 0124\n0.2 3404", "0.5 fentanyl\n0.4 cefazolin"),
    "overdose": ("0.3 9604", "0.6 naloxone\n0.2 sodium_bicarb"),
    "diabetic_crisis": ("", "0.95 insulin\n0.8 kcl"),
    "hypoglycemia": ("", "0.8 dextrose50\n0.3 glucagon"),
    "electrolytes": ("", "0.7 kcl\n0.5 mag\n0.3 kphos"),
    "vte": ("", "0.9 heparin_drip:60 enoxaparin:40\n0.6 warfarin"),
    "postop_complication": ("0.3 8622", "0.5 cefazolin:40 vancomycin:60"),
    "cardiac_surgery": ("!1.0 3961\n0.75 3615\n0.6 3612:55 3613:45\n0.25 3521\n0.8 9904",
                        "0.9 cefazolin\n0.8 aspirin\n0.7 metoprolol\n0.5 phenylephrine\n0.6 furosemide"),
    "pancreatobiliary": ("0.35 5110\n0.25 5123", "0.5 piptazo\n0.4 hydromorphone"),
    "bowel": ("0.15 4562\n0.4 9607", "0.3 metronidazole"),
    "c_diff": ("", "0.9 metronidazole:50 oral_vanco:50"),
    "gastroenteritis": ("", "0.3 ciprofloxacin"),
    "delirium": ("", "0.5 haloperidol:50 quetiapine:50"),
    "skin_infection": ("0.25 8622", "0.9 vancomycin:50 cefazolin:50"),
    "pressure_ulcer": ("0.3 8622", ""),
    "shock_hypotension": ("0.4 0017\n0.3 3893", "0.6 norepinephrine:70 phenylephrine:30\n0.6 lr"),
    "seizure": ("0.3 8891", "0.9 levetiracetam:70 phenytoin:30\n0.4 lorazepam"),
    "cancer_treatment": ("0.5 9925", "0.7 chemo\n0.4 filgrastim"),
    "malnutrition": ("0.3 9915\n0.2 966", "0.5 multivitamin"),
    "hypertensive_emergency": ("", "0.8 labetalol:60 esmolol:40"),
    "pericardial": ("0.6 8872", ""),
    "pleural": ("0.5 3491\n0.1 3404", ""),
    "coagulopathy": ("0.4 9907\n0.2 9905", ""),
    "urologic": ("", "0.5 tamsulosin\n0.3 ketorolac"),
    "infection_misc": ("", "0.5 ceftriaxone:50 vancomycin:50"),
    "anoxic_injury": ("0.6 9604\n0.6 9672:70 9671:30", "0.5 propofol"),
    "delivery": ("!0.3 741\n0.4 7359\n0.3 7309", "0.8 oxytocin\n0.8 ibuprofen\n0.6 prenatal\n0.3 cefazolin"),
}
# fmt: on
