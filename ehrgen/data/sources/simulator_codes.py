"""The simulator's clinical world: real ICD-9-CM diagnosis codes and the latent conditions that emit them.

Everything here is data read by :mod:`ehrgen.data.sources.simulator`. The code titles are written
from the public-domain ICD-9-CM (FY2015 edition, the last); every code is a valid billable
diagnosis code. A condition is a latent disease process:

- ``chronic``: drawn once per patient (from age, sex, frailty and the chronic conditions listed
  before it), then each of its emitted codes is fixed for the patient and re-coded at each visit
  with probability ``persist``;
- ``acute``: drawn per visit (from age, sex, frailty and the patient's chronic conditions), its
  codes are drawn afresh at each visit.

``codes`` holds one emission group per line: ``[!]prob code[:weight] code[:weight] ...``. With
probability ``prob`` the group emits exactly one of its codes (by weight, default 1); ``!`` marks
the principal diagnosis of an admission (coded first). Rates are probabilities for an average
patient of 65 (per patient for chronic, per visit for acute); ``age`` and ``female`` shift the
log-odds per decade above 65 and for women, ``after`` by each named earlier chronic condition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ehrgen.data.rules import FEMALE, MALE


@dataclass(frozen=True)
class Condition:
    """A latent condition: when it is active it emits a cluster of co-occurring codes."""

    name: str
    scope: str  # "chronic" (per patient, persists) or "acute" (per visit)
    rate: float
    codes: str
    label: str = ""  # ADMISSIONS.DIAGNOSIS when this condition gives the principal diagnosis
    age: float = 0.0
    female: float = 0.0
    frailty: float = 0.4
    sex: int | None = None
    min_age: float = 16.0
    max_age: float = 130.0
    after: Mapping[str, float] = field(default_factory=dict)
    persist: float = 0.8
    mortality: float = 0.0  # log-odds of in-hospital death added while active
    los: float = 0.0  # log length of stay added while active
    elective: float = 0.0  # chance the admission is elective while active

    @property
    def restricted(self) -> bool:
        """Only for one sex or not for every adult: its codes stay out of the background tail."""
        return self.sex is not None or (self.min_age, self.max_age) != (16.0, 130.0)


def chronic(name: str, rate: float, codes: str, **kw) -> Condition:
    return Condition(name, "chronic", rate, codes, **kw)


def acute(name: str, rate: float, codes: str, label: str, **kw) -> Condition:
    return Condition(name, "acute", rate, codes, label=label, **kw)


NEWBORN = {"min_age": 0.0, "max_age": 1.0, "frailty": 0.3, "persist": 1.0}
CANCERS = ("lung_cancer", "breast_cancer", "prostate_cancer", "colon_cancer", "gi_cancer", "heme_cancer",
           "other_cancer", "gyn_cancer", "brain_tumor")  # fmt: skip

# fmt: off
CONDITIONS: tuple[Condition, ...] = (
    # ---------------------------------------------------------------- newborns (NICU admissions)
    chronic("birth", 1.0, """
        !1.0 V3000:58 V3001:34 V3100:4 V3101:4
        0.65 V053
        0.55 V290
        0.02 V293""", label="NEWBORN", **NEWBORN),
    chronic("prematurity", 0.4, """
        0.95 76528:30 76527:25 76526:18 76525:12 76524:8
        0.75 76518:8 76517:35 76516:20 76515:15 76514:12 76510:10
        0.55 7742
        0.3 769
        0.2 7706
        0.12 7766
        0.08 7707
        0.15 77081 77082
        0.1 77981
        0.06 36220
        0.25 77931
        0.05 7470""", los=1.3, mortality=1.0, **NEWBORN),
    chronic("neonatal_jaundice", 0.2, "1.0 7746\n0.08 7731", **NEWBORN),
    chronic("neonatal_sepsis_workup", 0.2, "1.0 V290\n0.05 77181", after={"prematurity": 0.8}, **NEWBORN),
    chronic("neonatal_respiratory", 0.1, "1.0 7706:50 77089:30 769:20", **NEWBORN),
    chronic("infant_of_diabetic_mother", 0.04, "0.6 7750\n0.7 7756\n0.05 7751", **NEWBORN),
    chronic("newborn_misc", 0.2, """
        0.3 7852
        0.15 7455 7454
        0.2 7661
        0.1 77989
        0.05 7580
        0.05 77931""", **NEWBORN),
    chronic("circumcision", 0.3, "1.0 V502", sex=MALE, **NEWBORN),
    # ---------------------------------------------------------------- chronic, adults
    chronic("tobacco", 0.22, "0.45 3051\n0.55 V1582", age=-0.15, female=-0.4),
    chronic("alcohol", 0.07, """
        1.0 30390:45 30500:35 30391:20
        0.1 2912
        0.08 2651""", age=-0.3, female=-0.9),
    chronic("substance", 0.025, """
        1.0 30400:35 30560:25 30590:25 30520:15
        0.1 V600
        0.1 V1581""", age=-0.8, female=-0.5),
    chronic("obesity", 0.12, """
        1.0 27800:60 27801:40
        0.3 32723
        0.12 V8541""", age=-0.1, female=0.2),
    chronic("hypertension", 0.5, "0.92 4019:95 4011:5", age=0.45, frailty=0.3, after={"obesity": 0.8}),
    chronic("diabetes", 0.24, """
        1.0 25000:70 25002:8 25001:6 25060:6 25040:4 25050:2 25080:2 25070:1 25061:1
        0.35 V5867
        0.12 3572
        0.05 36201
        0.05 V5869""", age=0.1, after={"obesity": 1.0, "hypertension": 0.5}),
    chronic("hyperlipidemia", 0.28, "1.0 2724:70 2720:20 2722:8 2721:2",
            age=0.2, after={"diabetes": 0.6, "hypertension": 0.5}),
    chronic("cad", 0.15, """
        !1.0 41401:88 41400:8 4149:2 4148:2
        0.25 V4581
        0.2 V4582
        0.15 412
        0.08 4139
        0.15 V5866
        0.03 41402
        0.03 V173""", age=0.5, female=-0.6,
            after={"diabetes": 0.5, "hypertension": 0.5, "hyperlipidemia": 0.9, "tobacco": 0.5}),
    chronic("ckd", 0.13, """
        1.0 5859:32 5853:30 5854:12 5856:16 5852:6 5855:4
        0.55 40390:75 40391:25
        0.25 28521
        0.12 V4511
        0.15 58881
        0.05 2753
        0.03 V4573""", age=0.5, after={"diabetes": 1.0, "hypertension": 0.8}, mortality=0.2),
    chronic("afib", 0.17, "!1.0 42731\n0.35 V5861\n0.08 42732", age=0.7, after={"hypertension": 0.3}),
    chronic("heart_failure", 0.13, """
        !1.0 4280:55 42832:15 42822:15 42843:3 4293:2
        0.15 4254
        0.06 40291
        0.04 V4502""", age=0.6, after={"cad": 1.0, "afib": 0.8, "ckd": 0.6, "hypertension": 0.3},
            mortality=0.3),
    chronic("valvular", 0.06, """
        1.0 4241:50 4240:42 3970:5 3940:3
        0.12 V433
        0.05 39891""", age=0.6, after={"heart_failure": 0.6}),
    chronic("pacemaker", 0.03, "1.0 V4501\n0.3 42781", age=0.9, after={"afib": 0.6}),
    chronic("pvd", 0.06, """
        1.0 4439:65 44020:15 44021:12 4400:8
        0.1 4414
        0.05 4412""", age=0.5, after={"diabetes": 0.8, "tobacco": 1.0, "cad": 0.6}),
    chronic("copd", 0.13, """
        !1.0 496:60 4928:20 49120:15 4940:5
        0.15 V462
        0.08 51883
        0.05 4168""", age=0.4, after={"tobacco": 1.6}, mortality=0.2),
    chronic("asthma", 0.05, "1.0 49390:90 49320:10", age=-0.3, female=0.5),
    chronic("pulm_htn", 0.03, "1.0 4168:80 4160:20", age=0.4, after={"copd": 0.8, "heart_failure": 1.0}),
    chronic("ild", 0.012, "1.0 515:60 51631:40\n0.3 V462", age=0.6),
    chronic("hep_c", 0.025, "1.0 07054:60 07070:40\n0.05 07032", age=-0.4, after={"substance": 2.0, "alcohol": 0.5}),
    chronic("cirrhosis", 0.03, """
        !1.0 5712:42 5715:48 5716:6 5718:4
        0.45 5723
        0.3 4561 45621
        0.3 2875
        0.2 2869
        0.1 2894""", age=-0.1, after={"alcohol": 2.0, "hep_c": 2.0, "obesity": 0.3}, mortality=0.6),
    chronic("dementia", 0.05, """
        1.0 3310:40 2900:25 29420:20 33182:5 2948:10
        0.35 29410:85 29411:15""", age=1.0, frailty=0.5),
    chronic("parkinson", 0.015, "!1.0 3320", age=0.8, female=-0.4),
    chronic("stroke_history", 0.05, """
        1.0 V1254:45 43820:20 4389:15 4380:10 43811:10
        0.15 43310
        0.05 4370""", age=0.5, after={"afib": 0.5, "hypertension": 0.4}),
    chronic("depression", 0.09, """
        1.0 311:70 29620:10 29630:8 3004:12
        0.3 30000:70 30002:20 30001:10
        0.04 30981""", age=-0.1, female=0.5),
    chronic("psychotic", 0.02, "!1.0 29590:40 29680:45 29570:15", age=-0.5),
    chronic("hypothyroid", 0.07, "1.0 2449:95 2440:5", age=0.3, female=1.0),
    chronic("thyroid_misc", 0.015, "1.0 2410 2409 24290", female=0.8),
    chronic("gerd", 0.13, "1.0 53081:92 53011:5 53085:3\n0.08 5533", age=0.1),
    chronic("osteoarthritis", 0.06, """
        1.0 71590:60 71536:25 7213:15
        0.15 V4365 V4364""", age=0.5, female=0.3, after={"obesity": 0.5}),
    chronic("osteoporosis", 0.025, "1.0 73300:75 73301:25\n0.05 73313", age=0.8, female=1.2),
    chronic("spine_pain", 0.05, """
        1.0 7242:25 72252:20 72400:20 7245:15 7224:10 3384:10
        0.2 33829""", age=0.1),
    chronic("anemia_chronic", 0.12, "1.0 2859:45 2809:25 2800:10 28529:12 2811:4 2810:4", age=0.3,
            after={"ckd": 0.8}),
    chronic("thrombophilia", 0.035, "1.0 V1251\n0.6 V5861\n0.06 28981"),
    chronic("lung_cancer", 0.025, """
        !1.0 1629:55 1623:30 1625:10 1628:5
        0.2 1983
        0.15 1985
        0.15 1977
        0.1 1961
        0.08 51181""", age=0.3, after={"tobacco": 1.6, "copd": 0.5}, mortality=0.8),
    chronic("breast_cancer", 0.03, """
        1.0 1749:55 1744:15 V103:25 2330:5
        0.12 1985
        0.06 1970
        0.05 V163""", sex=FEMALE, age=0.2, mortality=0.3),
    chronic("prostate_cancer", 0.04, "1.0 185:70 V1046:30\n0.1 1985", sex=MALE, age=0.8),
    chronic("colon_cancer", 0.018, """
        !1.0 1539:35 1533:20 1534:15 1536:10 1530:5 1541:10 1540:5
        0.25 1977
        0.1 V443
        0.1 V1005""", age=0.4, mortality=0.5),
    chronic("gi_cancer", 0.014, """
        !1.0 1579:35 1570:20 1550:20 1509:10 1508:3 1519:8 1510:2 1561:2
        0.3 1977
        0.15 1962
        0.1 1976""", age=0.4, after={"cirrhosis": 1.5, "alcohol": 0.4}, mortality=1.0),
    chronic("heme_cancer", 0.025, """
        !1.0 20410:22 20300:20 20500:18 20280:20 20510:6 20190:4 20080:4 23875:6
        0.2 28522
        0.1 2384""", age=0.3, mortality=0.8),
    chronic("brain_tumor", 0.006, "!1.0 1919:45 1911:20 1912:15 2252:15 2396:5\n0.3 3485\n0.2 78039",
            age=-0.2, mortality=0.8),
    chronic("other_cancer", 0.02, """
        !1.0 1890:25 1889:22 1888:5 1729:15 1410:8 1618:8 193:10 1639:3 1640:2 1991:2
        0.15 1970
        0.12 1985
        0.08 19889
        0.05 1987""", age=0.3, mortality=0.5),
    chronic("gyn_cancer", 0.008, "!1.0 1830:45 1820:35 1809:20\n0.2 1976\n0.1 19889", sex=FEMALE, age=0.2,
            mortality=0.6),
    chronic("hiv", 0.01, "!1.0 042\n0.1 1363\n0.15 07054\n0.05 1125", age=-0.6, female=-0.6,
            after={"substance": 1.5}, mortality=0.5),
    chronic("transplant", 0.012, "1.0 V420:65 V427:35\n0.12 99681 99682\n0.3 V5869", age=-0.2,
            after={"ckd": 1.2, "cirrhosis": 1.2}),
    chronic("bph", 0.09, "1.0 60000:70 60001:30\n0.15 78820\n0.05 60784", sex=MALE, age=0.8),
    chronic("gyn_misc", 0.03, "1.0 2189:35 6184:25 6202:20 6259:20", sex=FEMALE),
    chronic("rheumatic", 0.03, """
        1.0 7140:55 7100:25 725:10 7101:5 7200:5
        0.35 V5865""", female=1.0),
    chronic("gout", 0.04, "1.0 2749", age=0.4, female=-0.6, after={"ckd": 0.5}),
    chronic("epilepsy", 0.03, "!1.0 34590:85 78039:15", age=-0.4),
    chronic("neuro_disability", 0.015, """
        1.0 340:25 3441:15 34400:15 33520:10 35800:10 3439:10 317:10 3314:5
        0.2 59654
        0.15 V441
        0.08 V440""", age=-0.5, frailty=0.6),
    chronic("chronic_pancreatitis", 0.008, "1.0 5771\n0.2 5772\n0.1 5793", after={"alcohol": 2.0}),
    chronic("sensory", 0.04, "1.0 3669:40 3659:30 3899:30", age=1.0),
    chronic("neuropathy_misc", 0.02, "1.0 3569:50 3540:25 3501:10 3510:10 34690:5"),
    chronic("allergy_history", 0.08, "1.0 V140:75 V142:25", female=0.5),
    chronic("mrsa_carrier", 0.02, "1.0 V0254:70 V090:30", frailty=0.8),
    # ---------------------------------------------------------------- acute, adults (per visit)
    acute("sepsis", 0.065, """
        !1.0 0389:78 03842:4 03811:4 03812:3 0382:2 03849:3 03843:1 0380:2 03810:1 03819:1 03840:1
        0.9 99591:55 99592:45
        0.35 78552
        0.45 5849:85 5845:15
        0.3 51881
        0.3 2762
        0.3 5990
        0.25 486
        0.15 2875
        0.1 2869
        0.1 2866
        0.1 7907
        0.15 04149 04111 04112 0417 04104 0413 04102 04119 04185 0419""", "SEPSIS", age=0.2, frailty=0.5,
         after={"ckd": 0.4, "diabetes": 0.3, "cirrhosis": 0.8, "heme_cancer": 0.9, "hiv": 0.8, "transplant": 0.8,
                "dementia": 0.5, "neuro_disability": 0.8}, mortality=1.3),
    acute("pneumonia", 0.08, """
        !1.0 486:78 4829:5 4821:4 48241:3 48242:3 485:3 481:2 4820:1 4822:1 48282:1
        0.25 51881
        0.15 2761
        0.1 4871 4870
        0.15 79902
        0.08 5119""", "PNEUMONIA", age=0.3, after={"copd": 0.6, "dementia": 0.5, "heme_cancer": 0.6},
         mortality=0.5),
    acute("aspiration", 0.02, "!1.0 5070\n0.3 78720\n0.2 51881", "ASPIRATION PNEUMONIA", age=0.6,
          after={"dementia": 1.0, "stroke_history": 0.8, "parkinson": 1.0, "neuro_disability": 1.2}, mortality=0.6),
    acute("uti", 0.05, """
        !1.0 5990:85 59010:8 59080:5 5959:2
        0.45 04149:45 04104:15 0417:10 0413:15 04119:5 04185:5 0419:5
        0.05 V090
        0.05 99664""", "URINARY TRACT INFECTION", age=0.4, female=0.7,
         after={"dementia": 0.8, "bph": 0.5, "neuro_disability": 0.8}),
    acute("acute_mi", 0.045, """
        !1.0 41071:60 41041:14 41011:14 41091:8 41189:4
        0.8 41401
        0.3 4280
        0.12 42731
        0.08 4271 42741
        0.07 78551
        0.05 4275
        0.4 2724""", "MYOCARDIAL INFARCTION", age=0.4, female=-0.3, after={"cad": 1.5, "diabetes": 0.3},
         mortality=0.9),
    acute("chf_exacerbation", 0.006, """
        !1.0 4280:40 42833:25 42823:20 42843:5 42821:5 42831:5
        0.15 51881
        0.25 5849
        0.15 2761
        0.2 5119
        0.15 5184
        0.15 27669""", "CONGESTIVE HEART FAILURE", age=0.3, after={"heart_failure": 3.5}, mortality=0.4),
    acute("arrhythmia", 0.03, """
        !1.0 42731:50 4271:8 42789:10 4275:4 4260:5 42781:8 42732:5 4279:4 4270:6
        0.3 7802
        0.1 42611 4264
        0.05 E9420""", "ATRIAL FIBRILLATION", age=0.4, after={"afib": 1.5, "heart_failure": 0.5, "pacemaker": 0.5},
         mortality=0.3),
    acute("aki", 0.05, """
        1.0 5849:85 5845:12 586:3
        0.25 2762
        0.25 2767
        0.3 27651:60 27650:20 27652:20
        0.1 2760
        0.05 7885""", "ACUTE RENAL FAILURE", age=0.4,
         after={"ckd": 1.2, "heart_failure": 0.6, "diabetes": 0.4}, mortality=0.4),
    acute("resp_failure", 0.045, """
        !1.0 51881:70 51884:15 51882:10 51851:5
        0.15 5119
        0.1 V4611
        0.15 79902
        0.1 5180
        0.05 7991""", "RESPIRATORY FAILURE", after={"copd": 1.0, "heart_failure": 0.5, "neuro_disability": 0.8,
                                                   "ild": 1.2}, mortality=1.1),
    acute("copd_exacerbation", 0.002, "!1.0 49121:80 49122:20\n0.3 51881\n0.1 4660\n0.1 51911",
          "COPD EXACERBATION", after={"copd": 3.5}, mortality=0.3),
    acute("asthma_exacerbation", 0.002, "!1.0 49392\n0.2 51881", "ASTHMA EXACERBATION", after={"asthma": 3.5}),
    acute("gi_bleed", 0.035, """
        !1.0 5789:45 5780:12 5781:18 5693:10 56212:10 53501:5
        0.6 2851
        0.3 53140 53240 5307 53500
        0.1 2800""", "GASTROINTESTINAL BLEED", age=0.4,
         after={"cirrhosis": 1.2, "afib": 0.5, "ckd": 0.3, "alcohol": 0.6}, mortality=0.4),
    acute("liver_decompensation", 0.001, """
        !0.5 5722
        0.45 78959
        0.15 56723
        0.1 5724
        0.2 4560 45620
        0.25 7824
        0.15 570""", "LIVER FAILURE", after={"cirrhosis": 4.5, "hep_c": 1.0, "alcohol": 1.0}, mortality=1.2),
    acute("alcohol_withdrawal", 0.001, "!1.0 29181:75 2910:25\n0.3 5711\n0.2 2752\n0.1 9800",
          "ETOH WITHDRAWAL", after={"alcohol": 4.0}),
    acute("stroke", 0.035, """
        !1.0 43491:40 43411:18 431:18 430:8 4359:8 436:4 4321:4
        0.3 34290
        0.2 7843
        0.15 78720
        0.12 43310
        0.1 3485 3484""", "STROKE", age=0.6, after={"afib": 1.0, "hypertension": 0.5, "diabetes": 0.3},
         mortality=1.0),
    acute("fall_injury", 0.035, """
        !1.0 82021:14 82000:10 8208:8 8052:8 8054:8 80701:8 80703:6 85220:10 85221:6 8509:6 81201:5 81342:5 8244:3 8082:3
        0.8 E8859:40 E8889:45 E8809:15
        0.6 E8490:55 E8497:20 E8499:20 E8498:5
        0.35 920 9248 8730
        0.15 2851
        0.15 V1588""", "FALL", age=0.6, after={"dementia": 0.8, "parkinson": 0.8, "alcohol": 0.8, "osteoporosis": 0.6},
         mortality=0.3),
    acute("trauma", 0.018, """
        !1.0 86121:15 8600:12 8604:6 85200:12 85300:10 86402:8 86502:8 80500:8 8052:6 80703:8 8509:7
        0.9 E8120:35 E8160:20 E8191:15 E8192:15 E8147:10 E9654:3 E966:2
        0.3 920 9248 9597
        0.15 2851
        0.05 9584
        0.1 3051""", "MOTOR VEHICLE ACCIDENT", age=-0.6, female=-0.6, frailty=0.0,
         after={"alcohol": 0.8, "substance": 0.8}, mortality=0.6),
    acute("overdose", 0.012, """
        !1.0 96509:25 9654:18 9694:18 96900:12 96501:10 96502:5 96500:4 9670:4 9800:4
        0.6 E9500:30 E8502:35 E9503:20 E9800:15
        0.35 V6284
        0.25 311
        0.15 30500
        0.2 51881
        0.1 5070""", "OVERDOSE", age=-0.8,
         after={"substance": 2.0, "depression": 1.2, "alcohol": 1.0, "psychotic": 1.0}, mortality=0.4),
    acute("diabetic_crisis", 0.002, """
        !1.0 25013:30 25011:15 25012:20 25010:15 25020:10 25082:5 25081:5
        0.5 2762
        0.4 27651
        0.2 2767""", "DIABETIC KETOACIDOSIS", age=-0.5, after={"diabetes": 3.2}),
    acute("hypoglycemia", 0.003, "!1.0 2512:70 25080:20 2510:10\n0.3 78097", "HYPOGLYCEMIA",
          after={"diabetes": 2.5, "alcohol": 0.8}),
    acute("electrolytes", 0.08, """
        0.3 2761
        0.3 2762
        0.25 2768
        0.2 2767
        0.15 2760
        0.12 2752
        0.1 2753
        0.1 27541
        0.05 27542
        0.05 2763
        0.05 2764
        0.08 2769""", "HYPONATREMIA", age=0.3, frailty=0.5),
    acute("vte", 0.02, """
        !1.0 41519:45 45341:25 45340:15 45342:8 45382:5 41511:2
        0.4 V5861
        0.05 E9342""", "PULMONARY EMBOLISM",
         after={**dict.fromkeys(CANCERS, 0.9), "thrombophilia": 2.0}, mortality=0.4),
    acute("postop_complication", 0.035, """
        !1.0 99811:20 99859:20 9971:15 99749:12 99739:10 99812:8 9982:8 99832:7
        0.9 E8788:50 E8782:25 E8781:15 E8798:10
        0.2 2851
        0.15 51851
        0.05 V6441""", "S/P SURGERY", mortality=0.2, elective=0.5),
    acute("device_complication", 0.012, """
        !1.0 99662:30 99674:20 99672:15 99666:12 99673:10 99602:5 99631:8
        0.8 E8781:80 E8798:20""", "INFECTED GRAFT",
         after={"ckd": 0.6, "cad": 0.4, "valvular": 0.8, "osteoarthritis": 0.6}),
    acute("cardiac_surgery", 0.025, """
        !1.0 41401:75 4241:15 4240:7 44100:3
        0.3 4111
        0.35 42731
        0.4 2851
        0.15 9971
        0.3 E8782:60 E8788:40
        0.1 4293""", "CORONARY ARTERY DISEASE\\CORONARY ARTERY BYPASS GRAFT /SDA", age=0.3, female=-0.5,
         after={"cad": 1.8, "valvular": 1.8}, elective=0.8),
    acute("pancreatobiliary", 0.03, """
        !1.0 5770:45 57400:15 5750:10 5761:12 57450:8 57420:5 5762:5
        0.2 27651
        0.1 2762""", "PANCREATITIS", after={"alcohol": 1.0, "chronic_pancreatitis": 2.0, "obesity": 0.4},
         mortality=0.2),
    acute("bowel", 0.03, """
        !1.0 5609:20 56089:15 5601:15 56211:20 5570:8 5409:8 5680:6 56981:4 55321:4
        0.15 78900 78906
        0.1 56400
        0.1 5571""", "ABDOMINAL PAIN", age=0.3, mortality=0.2),
    acute("c_diff", 0.02, "!1.0 00845\n0.3 78791\n0.2 27651", "C DIFF COLITIS", age=0.4, frailty=0.6),
    acute("gastroenteritis", 0.02, "!1.0 5589:50 0088:20 0090:15 0030:5 00861:10\n0.4 27651\n0.2 78701",
          "GASTROENTERITIS", age=-0.2),
    acute("delirium", 0.04, "1.0 2930:50 78097:40 2939:5 78009:5\n0.15 34831 34830 34839", "ALTERED MENTAL STATUS",
          age=0.8, after={"dementia": 1.2, "alcohol": 0.6}),
    acute("skin_infection", 0.03, """
        !1.0 6826:40 6827:20 6823:12 6822:8 6829:10 73027:5 73008:5
        0.15 70710 70714 70715
        0.1 7854
        0.1 44023 44024""", "CELLULITIS", after={"diabetes": 0.6, "pvd": 0.8, "obesity": 0.5}),
    acute("pressure_ulcer", 0.015, "1.0 70703:45 70707:20 70705:20 70709:15\n0.8 70722:45 70723:30 70724:25",
          "PRESSURE ULCER", age=0.8, frailty=0.6, after={"dementia": 1.2, "neuro_disability": 1.5}),
    acute("shock_hypotension", 0.03, "!1.0 4589:60 45829:20 4580:10 78559:5 78550:5", "HYPOTENSION",
          age=0.3, mortality=0.4),
    acute("seizure", 0.004, "!1.0 78039:60 34590:40\n0.1 34830", "SEIZURE",
          after={"epilepsy": 3.0, "alcohol": 0.8, "brain_tumor": 1.5}),
    acute("cancer_treatment", 0.001, """
        !1.0 V5811:50 28411:20 28803:15 28800:15
        0.4 E9331
        0.3 78060
        0.2 28522
        0.15 1120""", "CHEMOTHERAPY", after=dict.fromkeys(CANCERS, 3.5), elective=0.4, mortality=0.3),
    acute("malnutrition", 0.03, "1.0 2639:40 2638:20 2631:15 2630:10 7994:15\n0.3 78321\n0.2 7993",
          "FAILURE TO THRIVE", age=0.6, frailty=0.6, after=dict.fromkeys(CANCERS, 1.0)),
    acute("dnr_palliative", 0.02, "1.0 V4986\n0.25 V667", "COMFORT CARE", age=1.0, frailty=0.6,
          after=dict.fromkeys(CANCERS, 0.8), mortality=1.2),
    acute("endocrine", 0.012, "!1.0 25541:30 2536:35 2555:10 2532:5 25200:10 2521:10", "ADRENAL INSUFFICIENCY"),
    acute("infection_misc", 0.03, """
        !1.0 4210:12 0479:6 0539:12 0549:8 0785:8 1125:6 1173:6 1179:6 07999:10 5109:8 5192:4 56722:6 1122:8
        0.15 7907
        0.1 78060""", "FEVER", frailty=0.6, after={"hiv": 1.5, "transplant": 1.5, "heme_cancer": 1.2},
         mortality=0.3),
    acute("chest_symptoms", 0.04, "!1.0 78650:35 78659:25 7802:25 78605:10 7851:5\n0.1 7850", "CHEST PAIN",
          frailty=0.0),
    acute("hypertensive_emergency", 0.002, "!1.0 4010:70 4019:30\n0.2 7840\n0.1 34839",
          "HYPERTENSIVE EMERGENCY", after={"hypertension": 2.0}),
    acute("pericardial", 0.004, "!1.0 4239:60 42090:40", "PERICARDIAL EFFUSION"),
    acute("pleural", 0.02, "!1.0 5119:40 51189:20 5121:10 51289:10 5180:20\n0.1 78630", "PLEURAL EFFUSION",
          after={"lung_cancer": 1.0, "heart_failure": 0.4}),
    acute("coagulopathy", 0.02, "1.0 2875:30 2869:20 2867:15 28749:10 28984:5 2871:10 28730:5 28419:5\n0.3 79092",
          "COAGULOPATHY", after={"cirrhosis": 1.5, "heme_cancer": 1.2}),
    acute("hematologic_misc", 0.02, "1.0 28860:40 2890:20 2899:10 28260:10 2860:5 2819:15", "ANEMIA"),
    acute("abnormal_findings", 0.03, "1.0 7904:30 7907:10 7910:10 79092:20 7823:20 78079:10", "FEVER",
          frailty=0.3),
    acute("rhabdomyolysis", 0.006, "!1.0 72888\n0.4 5849\n0.2 2767", "RHABDOMYOLYSIS",
          after={"alcohol": 1.0, "substance": 1.0}),
    acute("respiratory_infection", 0.015, "!1.0 4660:35 490:25 4659:25 4619:15\n0.1 7862", "BRONCHITIS",
          frailty=0.2),
    acute("urologic", 0.015, "!1.0 5920:35 5921:25 591:20 59970:15 5939:5", "KIDNEY STONE"),
    acute("male_genitourinary", 0.01, "!1.0 60490:35 6010:30 6039:20 6089:15\n0.4 78820", "EPIDIDYMITIS",
          sex=MALE),
    acute("gyn_acute", 0.01, "!1.0 6149:25 6202:25 6268:25 6271:25", "PELVIC PAIN", sex=FEMALE, max_age=80.0),
    acute("drug_reaction", 0.02, "1.0 E9300:20 E9352:20 E9320:15 E9394:10 E9444:15 E9342:20\n0.3 6930",
          "DRUG REACTION"),
    acute("heat_misc", 0.002, "!1.0 9920\n0.3 72888", "HEAT STROKE"),
    acute("anoxic_injury", 0.004, "!1.0 4275:70 3481:30\n0.6 3481\n0.3 78001", "CARDIAC ARREST",
          mortality=2.0),
    acute("delivery", 0.03, """
        !1.0 V270:95 V272:5
        0.3 650
        0.2 64421
        0.15 64241 64251 64231
        0.2 66401 66411
        0.2 65421
        0.15 65971
        0.1 64511
        0.1 64821
        0.1 64881
        0.1 66331
        0.1 64891
        0.05 66612""", "PREGNANCY", sex=FEMALE, min_age=16.0, max_age=45.0, frailty=0.0, elective=0.3),
    acute("pregnancy_incidental", 0.006, "!1.0 V222", "PREGNANCY", sex=FEMALE, min_age=16.0, max_age=45.0,
          frailty=0.0),
)
# fmt: on

# Log of the gap to the next admission added while a chronic condition is present: as in MIMIC,
# patients with cancer under treatment, heart or liver failure, kidney disease, COPD, a transplant
# or HIV come back sooner (30-day readmission is far more common among them).
GAP_EFFECTS: Mapping[str, float] = {
    "heart_failure": -0.6, "ckd": -0.5, "cirrhosis": -0.8, "hep_c": -0.3, "copd": -0.5, "pulm_htn": -0.5,
    "lung_cancer": -0.9, "gi_cancer": -0.9, "heme_cancer": -1.0, "colon_cancer": -0.6, "breast_cancer": -0.5,
    "prostate_cancer": -0.3, "gyn_cancer": -0.7, "brain_tumor": -0.7, "other_cancer": -0.7, "hiv": -0.5,
    "transplant": -0.8, "chronic_pancreatitis": -0.6, "substance": -0.4, "alcohol": -0.4, "dementia": -0.3,
    "neuro_disability": -0.3, "mrsa_carrier": -0.4, "diabetes": -0.2, "afib": -0.2,
}  # fmt: skip


# code|short title|long title, in ICD-9-CM order
CODE_TABLE = """
0030|Salmonella enteritis|Salmonella gastroenteritis
00845|Int inf clstrdium dfcile|Intestinal infection due to Clostridium difficile
00861|Intes infec rotavirus|Enteritis due to rotavirus
0088|Viral enteritis NOS|Intestinal infection due to other organism, not elsewhere classified
0090|Infectious enteritis NOS|Infectious colitis, enteritis, and gastroenteritis
0380|Streptococcal septicemia|Streptococcal septicemia
03810|Staphylcocc septicem NOS|Staphylococcal septicemia, unspecified
03811|Meth susc Staph aur sept|Methicillin susceptible Staphylococcus aureus septicemia
03812|MRSA septicemia|Methicillin resistant Staphylococcus aureus septicemia
03819|Staphylcocc septicem NEC|Other staphylococcal septicemia
0382|Pneumococcal septicemia|Pneumococcal septicemia [Streptococcus pneumoniae septicemia]
03840|Gram-neg septicemia NOS|Septicemia due to gram-negative organism, unspecified
03842|E coli septicemia|Septicemia due to escherichia coli [E. coli]
03843|Pseudomonas septicemia|Septicemia due to pseudomonas
03849|Gram-neg septicemia NEC|Other septicemia due to gram-negative organisms
0388|Septicemia NEC|Other specified septicemias
0389|Septicemia NOS|Unspecified septicemia
04102|Streptococcus group B|Streptococcus infection in conditions classified elsewhere and of unspecified site, streptococcus, group B
04104|Enterococcus group D|Streptococcus infection in conditions classified elsewhere and of unspecified site, streptococcus, group D [Enterococcus]
04111|Mth sus Stph aur els/NOS|Methicillin susceptible Staphylococcus aureus in conditions classified elsewhere and of unspecified site
04112|MRSA elsewhere/NOS|Methicillin resistant Staphylococcus aureus in conditions classified elsewhere and of unspecified site
04119|Oth staphylococcus|Other Staphylococcus infection in conditions classified elsewhere and of unspecified site
0413|Klebsiella pneumoniae|Klebsiella pneumoniae infection in conditions classified elsewhere and of unspecified site
04149|E coli infection NEC/NOS|Other and unspecified Escherichia coli [E. coli]
0417|Pseudomonas infect NOS|Pseudomonas infection in conditions classified elsewhere and of unspecified site
04185|Bact inf NEC/NOS|Other specified bacterial infections in conditions classified elsewhere and of unspecified site, other gram-negative organisms
0419|Bacterial infection NOS|Bacterial infection, unspecified, in conditions classified elsewhere and of unspecified site
042|Human immuno virus dis|Human immunodeficiency virus [HIV] disease
0479|Viral meningitis NOS|Unspecified viral meningitis
0539|Herpes zoster NOS|Herpes zoster without mention of complication
0549|Herpes simplex NOS|Herpes simplex without mention of complication
07030|Hpt B acte wo cm wo dlta|Viral hepatitis B without mention of hepatic coma, acute or unspecified, without mention of hepatitis delta
07032|Chr hpt B w/o cm w/o dlt|Chronic viral hepatitis B without mention of hepatic coma without mention of hepatitis delta
07044|Chrnc hpt C w hepat coma|Chronic hepatitis C with hepatic coma
07054|Chrnc hpt C wo hpat coma|Chronic hepatitis C without mention of hepatic coma
07070|Hpt C w/o hepat coma NOS|Unspecified viral hepatitis C without hepatic coma
0785|Cytomegaloviral disease|Cytomegaloviral disease
07999|Viral infection NOS|Unspecified viral infection
1120|Thrush|Candidiasis of mouth
1122|Candidiasis urogenital|Candidiasis of other urogenital sites
1125|Disseminated candidiasis|Disseminated candidiasis
1173|Aspergillosis|Aspergillosis
1179|Mycoses NEC and NOS|Other and unspecified mycoses
1363|Pneumocystosis|Pneumocystosis
1410|Mal neo base of tongue|Malignant neoplasm of base of tongue
1508|Mal neo esophagus NEC|Malignant neoplasm of other specified part of esophagus
1509|Mal neo esophagus NOS|Malignant neoplasm of esophagus, unspecified site
1510|Mal neo stomach cardia|Malignant neoplasm of cardia
1519|Mal neo stomach NOS|Malignant neoplasm of stomach, unspecified site
1530|Mal neo hepatic flexure|Malignant neoplasm of hepatic flexure
1533|Mal neo sigmoid colon|Malignant neoplasm of sigmoid colon
1534|Malignant neo cecum|Malignant neoplasm of cecum
1536|Mal neo ascending colon|Malignant neoplasm of ascending colon
1539|Malig neo colon NOS|Malignant neoplasm of colon, unspecified site
1540|Mal neo rectosigmoid jct|Malignant neoplasm of rectosigmoid junction
1541|Malignant neopl rectum|Malignant neoplasm of rectum
1550|Mal neo liver, primary|Malignant neoplasm of liver, primary
1561|Mal neo extrahepat ducts|Malignant neoplasm of extrahepatic bile ducts
1570|Mal neo pancreas head|Malignant neoplasm of head of pancreas
1579|Mal neo pancreas NOS|Malignant neoplasm of pancreas, part unspecified
1618|Malig neo larynx NEC|Malignant neoplasm of other specified sites of larynx
1623|Mal neo upper lobe lung|Malignant neoplasm of upper lobe, bronchus or lung
1625|Mal neo lower lobe lung|Malignant neoplasm of lower lobe, bronchus or lung
1628|Mal neo bronch/lung NEC|Malignant neoplasm of other parts of bronchus or lung
1629|Mal neo bronch/lung NOS|Malignant neoplasm of bronchus and lung, unspecified
1639|Mal neo pleura NOS|Malignant neoplasm of pleura, unspecified
1640|Malig neoplasm thymus|Malignant neoplasm of thymus
1729|Melanoma skin NOS|Malignant melanoma of skin, site unspecified
1744|Mal neo breast up-outer|Malignant neoplasm of upper-outer quadrant of female breast
1749|Mal neo breast NOS|Malignant neoplasm of breast (female), unspecified
1809|Mal neo cervix uteri NOS|Malignant neoplasm of cervix uteri, unspecified
1820|Malig neo corpus uteri|Malignant neoplasm of corpus uteri, except isthmus
1830|Malign neopl ovary|Malignant neoplasm of ovary
185|Malign neopl prostate|Malignant neoplasm of prostate
1888|Malig neo bladder NEC|Malignant neoplasm of other specified sites of bladder
1889|Malig neo bladder NOS|Malignant neoplasm of bladder, part unspecified
1890|Malig neopl kidney|Malignant neoplasm of kidney, except pelvis
1911|Malig neo frontal lobe|Malignant neoplasm of frontal lobe
1912|Malig neo temporal lobe|Malignant neoplasm of temporal lobe
1919|Malig neo brain NOS|Malignant neoplasm of brain, unspecified
193|Malign neopl thyroid|Malignant neoplasm of thyroid gland
1960|Mal neo lymph-head/neck|Secondary and unspecified malignant neoplasm of lymph nodes of head, face, and neck
1961|Mal neo lymph-intrathor|Secondary and unspecified malignant neoplasm of intrathoracic lymph nodes
1962|Mal neo lymph intra-abd|Secondary and unspecified malignant neoplasm of intra-abdominal lymph nodes
1970|Secondary malig neo lung|Secondary malignant neoplasm of lung
1972|Second malig neo pleura|Secondary malignant neoplasm of pleura
1976|Sec mal neo peritoneum|Secondary malignant neoplasm of retroperitoneum and peritoneum
1977|Second malig neo liver|Malignant neoplasm of liver, secondary
1983|Sec mal neo brain/spine|Secondary malignant neoplasm of brain and spinal cord
1985|Secondary malig neo bone|Secondary malignant neoplasm of bone and bone marrow
1987|Second malig neo adrenal|Secondary malignant neoplasm of adrenal gland
19889|Secondary malig neo NEC|Secondary malignant neoplasm of other specified sites
1991|Malignant neoplasm NOS|Other malignant neoplasm without specification of site
20080|Oth lymphosarc unsp site|Other named variants of lymphosarcoma and reticulosarcoma, unspecified site, extranodal and solid organ sites
20190|Hodgkins dis NOS unsp st|Hodgkin's disease, unspecified type, unspecified site, extranodal and solid organ sites
20280|Oth lymphoma unsp xtrndl|Other malignant lymphomas, unspecified site, extranodal and solid organ sites
20300|Mult mye w/o achv rmson|Multiple myeloma, without mention of having achieved remission
20410|Ch lym leuk wo achv rmsn|Chronic lymphoid leukemia, without mention of having achieved remission
20500|Ac myl leuk wo achv rmsn|Acute myeloid leukemia, without mention of having achieved remission
20510|Ch myl leuk wo achv rmsn|Chronic myeloid leukemia, without mention of having achieved remission
2113|Benign neoplasm lg bowel|Benign neoplasm of colon
2115|Ben neo liver/bile ducts|Benign neoplasm of liver and biliary passages
2189|Leiomyoma of uterus NOS|Leiomyoma of uterus, unspecified
2252|Benign neo cerebr mening|Benign neoplasm of cerebral meninges
2273|Ben neo pituitary|Benign neoplasm of pituitary gland and craniopharyngeal duct
2330|Ca in situ breast|Carcinoma in situ of breast
2384|Neo unc beh polycythemia|Polycythemia vera
23875|Myelodysplastic synd NOS|Myelodysplastic syndrome, unspecified
2396|Brain neoplasm NOS|Neoplasms of unspecified nature of brain
2409|Goiter NOS|Goiter, unspecified
2410|Nontox uninodular goiter|Nontoxic uninodular goiter
24290|Hyprthyrd NOS no crisis|Thyrotoxicosis without mention of goiter or other cause, without mention of thyrotoxic crisis or storm
2440|Postsurgical hypothyroid|Postsurgical hypothyroidism
2449|Hypothyroidism NOS|Unspecified acquired hypothyroidism
24900|Sec DM wo cmp nt st uncn|Secondary diabetes mellitus without mention of complication, not stated as uncontrolled, or unspecified
25000|DMII wo cmp nt st uncntr|Diabetes mellitus without mention of complication, type II or unspecified type, not stated as uncontrolled
25001|DMI wo cmp nt st uncntrl|Diabetes mellitus without mention of complication, type I [juvenile type], not stated as uncontrolled
25002|DMII wo cmp uncntrld|Diabetes mellitus without mention of complication, type II or unspecified type, uncontrolled
25010|DMII keto nt st uncntrld|Diabetes with ketoacidosis, type II or unspecified type, not stated as uncontrolled
25011|DMI keto nt st uncntrld|Diabetes with ketoacidosis, type I [juvenile type], not stated as uncontrolled
25012|DMII ketoacd uncontrold|Diabetes with ketoacidosis, type II or unspecified type, uncontrolled
25013|DMI ketoacd uncontrold|Diabetes with ketoacidosis, type I [juvenile type], uncontrolled
25020|DMII hprsm nt st uncntrl|Diabetes with hyperosmolarity, type II or unspecified type, not stated as uncontrolled
25040|DMII renl nt st uncntrld|Diabetes with renal manifestations, type II or unspecified type, not stated as uncontrolled
25041|DMI renl nt st uncntrld|Diabetes with renal manifestations, type I [juvenile type], not stated as uncontrolled
25050|DMII ophth nt st uncntrl|Diabetes with ophthalmic manifestations, type II or unspecified type, not stated as uncontrolled
25060|DMII neuro nt st uncntrl|Diabetes with neurological manifestations, type II or unspecified type, not stated as uncontrolled
25061|DMI neuro nt st uncntrld|Diabetes with neurological manifestations, type I [juvenile type], not stated as uncontrolled
25070|DMII circ nt st uncntrld|Diabetes with peripheral circulatory disorders, type II or unspecified type, not stated as uncontrolled
25080|DMII oth nt st uncntrld|Diabetes with other specified manifestations, type II or unspecified type, not stated as uncontrolled
25081|DMI oth nt st uncntrld|Diabetes with other specified manifestations, type I [juvenile type], not stated as uncontrolled
25082|DMII oth uncntrld|Diabetes with other specified manifestations, type II or unspecified type, uncontrolled
2510|Hypoglycemic coma|Hypoglycemic coma
2512|Hypoglycemia NOS|Hypoglycemia, unspecified
25200|Hyperparathyroidism NOS|Hyperparathyroidism, unspecified
2521|Hypoparathyroidism|Hypoparathyroidism
2532|Panhypopituitarism|Panhypopituitarism
2536|Neurohypophysis dis NEC|Other disorders of neurohypophysis
25541|Glucocorticoid deficient|Glucocorticoid deficiency
2555|Adrenal hypofunction NEC|Other adrenal hypofunction
2630|Malnutrition mild degree|Malnutrition of mild degree
2631|Malnutrition mod degree|Malnutrition of moderate degree
2638|Protein-cal malnutr NEC|Other protein-calorie malnutrition
2639|Protein-cal malnutr NOS|Unspecified protein-calorie malnutrition
2651|Thiamine defic NEC/NOS|Other and unspecified manifestations of thiamine deficiency
2662|B-complex defic NEC|Other B-complex deficiencies
2689|Vitamin D deficiency NOS|Unspecified vitamin D deficiency
2720|Pure hypercholesterolem|Pure hypercholesterolemia
2721|Pure hyperglyceridemia|Pure hyperglyceridemia
2722|Mixed hyperlipidemia|Mixed hyperlipidemia
2724|Hyperlipidemia NEC/NOS|Other and unspecified hyperlipidemia
2749|Gout NOS|Gout, unspecified
2752|Dis magnesium metabolism|Disorders of magnesium metabolism
2753|Dis phosphorus metabol|Disorders of phosphorus metabolism
27541|Hypocalcemia|Hypocalcemia
27542|Hypercalcemia|Hypercalcemia
2760|Hyperosmolality|Hyperosmolality and/or hypernatremia
2761|Hyposmolality|Hyposmolality and/or hyponatremia
2762|Acidosis|Acidosis
2763|Alkalosis|Alkalosis
2764|Mixed acid-base bal dis|Mixed acid-base balance disorder
27650|Volume depletion NOS|Volume depletion, unspecified
27651|Dehydration|Dehydration
27652|Hypovolemia|Hypovolemia
27669|Fluid overload NEC|Other fluid overload
2767|Hyperpotassemia|Hyperpotassemia
2768|Hypopotassemia|Hypopotassemia
2769|Electrolyt/fluid dis NEC|Electrolyte and fluid disorders not elsewhere classified
27730|Amyloidosis NOS|Amyloidosis, unspecified
27800|Obesity NOS|Obesity, unspecified
27801|Morbid obesity|Morbid obesity
2800|Chr blood loss anemia|Iron deficiency anemia secondary to blood loss (chronic)
2809|Iron defic anemia NOS|Iron deficiency anemia, unspecified
2810|Pernicious anemia|Pernicious anemia
2811|B12 defic anemia NEC|Other vitamin B12 deficiency anemia
2819|Deficiency anemia NOS|Unspecified deficiency anemia
28260|Sickle-cell disease NOS|Sickle-cell disease, unspecified
28411|Antin chemo indcd pancyt|Antineoplastic chemotherapy induced pancytopenia
28419|Other pancytopenia|Other pancytopenia
2851|Ac posthemorrhag anemia|Acute posthemorrhagic anemia
28521|Anemia in chr kidney dis|Anemia in chronic kidney disease
28522|Anemia in neoplastic dis|Anemia in neoplastic disease
28529|Anemia-other chronic dis|Anemia of other chronic disease
2859|Anemia NOS|Anemia, unspecified
2860|Cong factor VIII diord|Congenital factor VIII disorder
2866|Defibrination syndrome|Defibrination syndrome
2867|Acq coag factor defic|Acquired coagulation factor deficiency
2869|Coagulat defect NEC/NOS|Other and unspecified coagulation defects
2871|Qualitative platelet def|Qualitative platelet defects
28730|Prim thrombocytopen NOS|Primary thrombocytopenia, unspecified
28749|Sec thrombocytpenia NEC|Other secondary thrombocytopenia
2875|Thrombocytopenia NOS|Thrombocytopenia, unspecified
28800|Neutropenia NOS|Neutropenia, unspecified
28803|Drug induced neutropenia|Drug induced neutropenia
28860|Leukocytosis NOS|Leukocytosis, unspecified
2890|Secondary polycythemia|Polycythemia, secondary
2894|Hypersplenism|Hypersplenism
28981|Prim hypercoagulable st|Primary hypercoagulable state
28984|Heparin-indu thrombocyto|Heparin-induced thrombocytopenia [HIT]
2899|Blood disease NOS|Unspecified diseases of blood and blood-forming organs
2900|Senile dementia uncomp|Senile dementia, uncomplicated
2910|Alc withdraw delirium|Alcohol withdrawal delirium
2912|Alcoh persist dementia|Alcohol-induced persisting dementia
29181|Alcohol withdrawal|Alcohol withdrawal
2930|Delirium d/t other cond|Delirium due to conditions classified elsewhere
2939|Transient mental dis NOS|Unspecified transient mental disorder in conditions classified elsewhere
29410|Dementia w/o behav dist|Dementia in conditions classified elsewhere without behavioral disturbance
29411|Dementia w behavior dist|Dementia in conditions classified elsewhere with behavioral disturbance
29420|Dementia NOS w/o behav|Dementia, unspecified, without behavioral disturbance
2948|Mental disor NEC oth dis|Other persistent mental disorders due to conditions classified elsewhere
29570|Schizoaffective dis NOS|Schizoaffective disorder, unspecified
29590|Schizophrenia NOS-unspec|Unspecified schizophrenia, unspecified
29620|Depress psychosis-unspec|Major depressive affective disorder, single episode, unspecified
29630|Depr psychos-recur unsp|Major depressive affective disorder, recurrent episode, unspecified
29680|Bipolar disorder NOS|Bipolar disorder, unspecified
2989|Psychosis NOS|Unspecified psychosis
30000|Anxiety state NOS|Anxiety state, unspecified
30001|Panic dis w/o agorphobia|Panic disorder without agoraphobia
30002|Generalized anxiety dis|Generalized anxiety disorder
3004|Dysthymic disorder|Dysthymic disorder
30390|Alc dep NEC/NOS-unspec|Other and unspecified alcohol dependence, unspecified
30391|Alc dep NEC/NOS-contin|Other and unspecified alcohol dependence, continuous
30400|Opioid dependence-unspec|Opioid type dependence, unspecified
30500|Alcohol abuse-unspec|Alcohol abuse, unspecified
3051|Tobacco use disorder|Tobacco use disorder
30520|Cannabis abuse-unspec|Cannabis abuse, unspecified
30560|Cocaine abuse-unspec|Cocaine abuse, unspecified
30590|Drug abuse NEC-unspec|Other, mixed, or unspecified drug abuse, unspecified
30981|Posttraumatic stress dis|Posttraumatic stress disorder
311|Depressive disorder NEC|Depressive disorder, not elsewhere classified
317|Mild intellect disabilty|Mild intellectual disabilities
32723|Obstructive sleep apnea|Obstructive sleep apnea (adult) (pediatric)
3310|Alzheimer's disease|Alzheimer's disease
3314|Obstructiv hydrocephalus|Obstructive hydrocephalus
33182|Dementia w Lewy bodies|Dementia with lewy bodies
3320|Paralysis agitans|Paralysis agitans
33520|Amyotrophic sclerosis|Amyotrophic lateral sclerosis
33829|Chronic pain NEC|Other chronic pain
3384|Chronic pain syndrome|Chronic pain syndrome
340|Multiple sclerosis|Multiple sclerosis
34290|Unsp hemiplga unspf side|Hemiplegia, unspecified, affecting unspecified side
3439|Infantile cerebral palsy|Infantile cerebral palsy, unspecified
34400|Quadriplegia, unspecifd|Quadriplegia, unspecified
3441|Paraplegia|Paraplegia
34590|Epilep NOS w/o intr epil|Epilepsy, unspecified, without mention of intractable epilepsy
34690|Migrne unsp wo ntrc mgrn|Migraine, unspecified, without mention of intractable migraine without mention of status migrainosus
3481|Anoxic brain damage|Anoxic brain damage
34830|Encephalopathy NOS|Encephalopathy, unspecified
34831|Metabolic encephalopathy|Metabolic encephalopathy
34839|Encephalopathy NEC|Other encephalopathy
3484|Compression of brain|Compression of brain
3485|Cerebral edema|Cerebral edema
3501|Trigeminal neuralgia|Trigeminal neuralgia
3510|Bell's palsy|Bell's palsy
3540|Carpal tunnel syndrome|Carpal tunnel syndrome
3569|Idio periph neurpthy NOS|Unspecified hereditary and idiopathic peripheral neuropathy
3572|Neuropathy in diabetes|Polyneuropathy in diabetes
35800|Myasth grav w/o ac exac|Myasthenia gravis without (acute) exacerbation
36201|Diabetic retinopathy NOS|Background diabetic retinopathy
36220|Retinop prematurity NOS|Retinopathy of prematurity, unspecified
3659|Glaucoma NOS|Unspecified glaucoma
3669|Cataract NOS|Unspecified cataract
3899|Hearing loss NOS|Unspecified hearing loss
3940|Mitral stenosis|Mitral stenosis
3970|Tricuspid valve disease|Diseases of tricuspid valve
39891|Rheumatic heart failure|Rheumatic heart failure (congestive)
4010|Malignant hypertension|Malignant essential hypertension
4011|Benign hypertension|Benign essential hypertension
4019|Hypertension NOS|Unspecified essential hypertension
40291|Hyp ht dis NOS w ht fail|Unspecified hypertensive heart disease with heart failure
40390|Hy kid NOS w cr kid I-IV|Hypertensive chronic kidney disease, unspecified, with chronic kidney disease stage I through stage IV, or unspecified
40391|Hyp kid NOS w cr kid V|Hypertensive chronic kidney disease, unspecified, with chronic kidney disease stage V or end stage renal disease
40491|Hyp ht/kd NOS w hf/ckd|Hypertensive heart and chronic kidney disease, unspecified, with heart failure and with chronic kidney disease stage I through stage IV, or unspecified
41011|AMI anterior wall, init|Acute myocardial infarction of other anterior wall, initial episode of care
41041|AMI inferior wall, init|Acute myocardial infarction of other inferior wall, initial episode of care
41071|Subendo infarct, initial|Subendocardial infarction, initial episode of care
41091|AMI NOS, initial|Acute myocardial infarction of unspecified site, initial episode of care
4111|Intermed coronary synd|Intermediate coronary syndrome
41189|Ac ischemic hrt dis NEC|Other acute and subacute forms of ischemic heart disease, other
412|Old myocardial infarct|Old myocardial infarction
4139|Angina pectoris NEC/NOS|Other and unspecified angina pectoris
41400|Cor ath unsp vsl ntv/gft|Coronary atherosclerosis of unspecified type of vessel, native or graft
41401|Crnry athrscl natve vssl|Coronary atherosclerosis of native coronary artery
41402|Crn ath atlg vn bps grft|Coronary atherosclerosis of autologous vein bypass graft
41410|Aneurysm of heart|Aneurysm of heart (wall)
4148|Chr ischemic hrt dis NEC|Other specified forms of chronic ischemic heart disease
4149|Chr ischemic hrt dis NOS|Chronic ischemic heart disease, unspecified
41511|Iatrogen pulm emb/infarc|Iatrogenic pulmonary embolism and infarction
41519|Pulm embol/infarct NEC|Other pulmonary embolism and infarction
4160|Prim pulm hypertension|Primary pulmonary hypertension
4168|Chr pulmon heart dis NEC|Other chronic pulmonary heart diseases
42090|Acute pericarditis NOS|Acute pericarditis, unspecified
4210|Ac/subac bact endocard|Acute and subacute bacterial endocarditis
4239|Pericardial disease NOS|Unspecified disease of pericardium
4240|Mitral valve disorder|Mitral valve disorders
4241|Aortic valve disorder|Aortic valve disorders
42490|Endocarditis NOS|Endocarditis, valve unspecified, unspecified cause
4254|Prim cardiomyopathy NEC|Other primary cardiomyopathies
4255|Alcoholic cardiomyopathy|Alcoholic cardiomyopathy
4260|Atriovent block complete|Atrioventricular block, complete
42611|Atriovent block-1st degr|First degree atrioventricular block
4264|Rt bundle branch block|Right bundle branch block
4270|Parox atrial tachycardia|Paroxysmal supraventricular tachycardia
4271|Parox ventric tachycard|Paroxysmal ventricular tachycardia
42731|Atrial fibrillation|Atrial fibrillation
42732|Atrial flutter|Atrial flutter
42741|Ventricular fibrillation|Ventricular fibrillation
4275|Cardiac arrest|Cardiac arrest
42781|Sinoatrial node dysfunct|Sinoatrial node dysfunction
42789|Cardiac dysrhythmias NEC|Other specified cardiac dysrhythmias
4279|Cardiac dysrhythmia NOS|Cardiac dysrhythmia, unspecified
4280|CHF NOS|Congestive heart failure, unspecified
42821|Ac systolic hrt failure|Acute systolic heart failure
42822|Chr systolic hrt failure|Chronic systolic heart failure
42823|Ac on chr syst hrt fail|Acute on chronic systolic heart failure
42831|Ac diastolic hrt failure|Acute diastolic heart failure
42832|Chr diastolic hrt fail|Chronic diastolic heart failure
42833|Ac on chr diast hrt fail|Acute on chronic diastolic heart failure
42843|Ac/chr syst/dia hrt fail|Acute on chronic combined systolic and diastolic heart failure
4293|Cardiomegaly|Cardiomegaly
430|Subarachnoid hemorrhage|Subarachnoid hemorrhage
431|Intracerebral hemorrhage|Intracerebral hemorrhage
4321|Subdural hemorrhage|Subdural hemorrhage
43310|Ocl crtd art wo infrct|Occlusion and stenosis of carotid artery without mention of cerebral infarction
43411|Crbl emblsm w infrct|Cerebral embolism with cerebral infarction
43491|Crbl art ocl NOS w infrc|Cerebral artery occlusion, unspecified with cerebral infarction
4359|Trans cereb ischemia NOS|Unspecified transient cerebral ischemia
436|Cva|Acute, but ill-defined, cerebrovascular disease
4370|Cerebral atherosclerosis|Cerebral atherosclerosis
4380|Late effect CV dis cognf|Late effects of cerebrovascular disease, cognitive deficits
43811|Late eff CV dis-aphasia|Late effects of cerebrovascular disease, speech and language deficits, aphasia
43820|Late ef-hemplga side NOS|Late effects of cerebrovascular disease, hemiplegia affecting unspecified side
4389|Late effect CV dis NOS|Unspecified late effects of cerebrovascular disease
4400|Aortic atherosclerosis|Atherosclerosis of aorta
44020|Athscl extrm ntv art NOS|Atherosclerosis of native arteries of the extremities, unspecified
44021|Athscl extrm art w claud|Atherosclerosis of native arteries of the extremities with intermittent claudication
44023|Athscl extrm art w ulcer|Atherosclerosis of native arteries of the extremities with ulceration
44024|Ath ext ntv at w gngrene|Atherosclerosis of native arteries of the extremities with gangrene
44100|Dsct of aorta unsp site|Dissection of aorta, unspecified site
4412|Thoracic aortic aneurysm|Thoracic aneurysm without mention of rupture
4414|Abdom aortic aneurysm|Abdominal aneurysm without mention of rupture
4423|Lower extremity aneurysm|Aneurysm of artery of lower extremity
4439|Periph vascular dis NOS|Peripheral vascular disease, unspecified
44422|Embolism lower extremity|Arterial embolism and thrombosis of lower extremity
4476|Arteritis NOS|Arteritis, unspecified
452|Portal vein thrombosis|Portal vein thrombosis
45340|Ac DVT/embl low ext NOS|Acute venous embolism and thrombosis of unspecified deep vessels of lower extremity
45341|Ac DVT/emb prox low ext|Acute venous embolism and thrombosis of deep vessels of proximal lower extremity
45342|Ac DVT/emb distl low ext|Acute venous embolism and thrombosis of deep vessels of distal lower extremity
45382|Ac DVT/emb up ext|Acute venous embolism and thrombosis of deep veins of upper extremity
4556|Hemorrhoids NOS|Unspecified hemorrhoids without mention of complication
4560|Esophag varices w bleed|Esophageal varices with bleeding
4561|Esoph varices w/o bleed|Esophageal varices without mention of bleeding
45620|Bleed esoph var oth dis|Esophageal varices in diseases classified elsewhere, with bleeding
45621|Esoph varice oth dis NOS|Esophageal varices in diseases classified elsewhere, without mention of bleeding
4580|Orthostatic hypotension|Orthostatic hypotension
45829|Iatrogenc hypotnsion NEC|Other iatrogenic hypotension
4589|Hypotension NOS|Hypotension, unspecified
45981|Venous insufficiency NOS|Venous (peripheral) insufficiency, unspecified
4619|Acute sinusitis NOS|Acute sinusitis, unspecified
4659|Acute uri NOS|Acute upper respiratory infections of unspecified site
4660|Acute bronchitis|Acute bronchitis
46611|Acu broncholitis d/t RSV|Acute bronchiolitis due to respiratory syncytial virus (RSV)
481|Pneumococcal pneumonia|Pneumococcal pneumonia [Streptococcus pneumoniae pneumonia]
4820|K. pneumoniae pneumonia|Pneumonia due to Klebsiella pneumoniae
4821|Pseudomonal pneumonia|Pneumonia due to Pseudomonas
4822|H.influenzae pneumonia|Pneumonia due to Hemophilus influenzae [H. influenzae]
48241|Meth sus pneum d/t Staph|Methicillin susceptible pneumonia due to Staphylococcus aureus
48242|Meth res pneu d/t Staph|Methicillin resistant pneumonia due to Staphylococcus aureus
48282|Pneumonia e coli|Pneumonia due to escherichia coli [E. coli]
48283|Pneumo oth grm-neg bact|Pneumonia due to other gram-negative bacteria
4829|Bacterial pneumonia NOS|Bacterial pneumonia, unspecified
485|Bronchopneumonia org NOS|Bronchopneumonia, organism unspecified
486|Pneumonia, organism NOS|Pneumonia, organism unspecified
4870|Influenza with pneumonia|Influenza with pneumonia
4871|Flu w resp manifest NEC|Influenza with other respiratory manifestations
490|Bronchitis NOS|Bronchitis, not specified as acute or chronic
49120|Obs chr bronc w/o exac|Obstructive chronic bronchitis, without exacerbation
49121|Obs chr bronc w(ac) exac|Obstructive chronic bronchitis, with (acute) exacerbation
49122|Obs chr bronc w ac bronc|Obstructive chronic bronchitis with acute bronchitis
4928|Emphysema NEC|Other emphysema
49320|Chronic obst asthma NOS|Chronic obstructive asthma, unspecified
49390|Asthma NOS|Asthma, unspecified type, unspecified
49392|Asthma NOS w (ac) exac|Asthma, unspecified type, with (acute) exacerbation
4940|Bronchiectas w/o ac exac|Bronchiectasis without acute exacerbation
496|Chr airway obstruct NEC|Chronic airway obstruction, not elsewhere classified
5070|Food/vomit pneumonitis|Pneumonitis due to inhalation of food or vomitus
5109|Empyema w/o fistula|Empyema without mention of fistula
51181|Malignant pleural effusn|Malignant pleural effusion
51189|Effusion NEC exc tb|Other specified forms of effusion, except tuberculous
5119|Pleural effusion NOS|Unspecified pleural effusion
5121|Iatrogenic pneumothorax|Iatrogenic pneumothorax
51289|Other pneumothorax|Other pneumothorax
514|Pulm congest/hypostasis|Pulmonary congestion and hypostasis
515|Postinflam pulm fibrosis|Postinflammatory pulmonary fibrosis
51631|Idio pulmonary fibrosis|Idiopathic pulmonary fibrosis
5180|Pulmonary collapse|Pulmonary collapse
5184|Acute lung edema NOS|Acute edema of lung, unspecified
51851|Ac resp flr fol trma/srg|Acute respiratory failure following trauma and surgery
51881|Acute respiratry failure|Acute respiratory failure
51882|Other pulmonary insuff|Other pulmonary insufficiency, not elsewhere classified
51883|Chronic respiratory fail|Chronic respiratory failure
51884|Acute & chronc resp fail|Acute and chronic respiratory failure
51911|Acute bronchospasm|Acute bronchospasm
5192|Mediastinitis|Mediastinitis
53010|Esophagitis, unspecified|Esophagitis, unspecified
53011|Reflux esophagitis|Reflux esophagitis
5307|Mallory-weiss syndrome|Gastroesophageal laceration-hemorrhage syndrome
53081|Esophageal reflux|Esophageal reflux
53085|Barrett's esophagus|Barrett's esophagus
53140|Chr stomach ulc w hem|Chronic or unspecified gastric ulcer with hemorrhage, without mention of obstruction
53240|Chr duoden ulcer w hem|Chronic or unspecified duodenal ulcer with hemorrhage, without mention of obstruction
53500|Acute gastritis w/o hem|Acute gastritis, without mention of hemorrhage
53501|Acute gastritis w hmrhg|Acute gastritis, with hemorrhage
5363|Gastroparesis|Gastroparesis
5409|Acute appendicitis NOS|Acute appendicitis without mention of peritonitis
55090|Unilat inguinal hernia|Inguinal hernia, without mention of obstruction or gangrene, unilateral or unspecified (not specified as recurrent)
55321|Incisional hernia|Incisional hernia without mention of obstruction or gangrene
5533|Diaphragmatic hernia|Diaphragmatic hernia without mention of obstruction or gangrene
5570|Ac vasc insuff intestine|Acute vascular insufficiency of intestine
5571|Chr vasc insuff intest|Chronic vascular insufficiency of intestine
5589|Noninf gastroenterit NEC|Other and unspecified noninfectious gastroenteritis and colitis
5601|Paralytic ileus|Paralytic ileus
56089|Intestinal obstruct NEC|Other specified intestinal obstruction
5609|Intestinal obstruct NOS|Unspecified intestinal obstruction
56210|Dvrtclo colon w/o hmrhg|Diverticulosis of colon (without mention of hemorrhage)
56211|Dvrtcli colon w/o hmrhg|Diverticulitis of colon (without mention of hemorrhage)
56212|Dvrtclo colon w hmrhg|Diverticulosis of colon with hemorrhage
56400|Constipation NOS|Constipation, unspecified
5641|Irritable bowel syndrome|Irritable bowel syndrome
56721|Peritonitis (acute) gen|Peritonitis (acute) generalized
56722|Peritoneal abscess|Peritoneal abscess
56723|Spontan bact peritonitis|Spontaneous bacterial peritonitis
5680|Peritoneal adhesions|Peritoneal adhesions (postoperative) (postinfection)
5693|Rectal & anal hemorrhage|Hemorrhage of rectum and anus
56981|Fistula of intestine|Fistula of intestine, excluding rectum and anus
570|Acute necrosis of liver|Acute and subacute necrosis of liver
5711|Ac alcoholic hepatitis|Acute alcoholic hepatitis
5712|Alcohol cirrhosis liver|Alcoholic cirrhosis of liver
5715|Cirrhosis of liver NOS|Cirrhosis of liver without mention of alcohol
5716|Biliary cirrhosis|Biliary cirrhosis
5718|Chronic liver dis NEC|Other chronic nonalcoholic liver disease
5722|Hepatic coma|Hepatic encephalopathy
5723|Portal hypertension|Portal hypertension
5724|Hepatorenal syndrome|Hepatorenal syndrome
5728|Oth sequela, chr liv dis|Other sequelae of chronic liver disease
5733|Hepatitis NOS|Hepatitis, unspecified
5738|Liver disorders NEC|Other specified disorders of liver
57400|Cholelith w ac chole|Calculus of gallbladder with acute cholecystitis, without mention of obstruction
57420|Cholelithiasis NOS|Calculus of gallbladder without mention of cholecystitis, without mention of obstruction
57450|Choledocholithiasis NOS|Calculus of bile duct without mention of cholecystitis, without mention of obstruction
5750|Acute cholecystitis|Acute cholecystitis
5761|Cholangitis|Cholangitis
5762|Obstruction of bile duct|Obstruction of bile duct
5770|Acute pancreatitis|Acute pancreatitis
5771|Chronic pancreatitis|Chronic pancreatitis
5772|Pancreat cyst/pseudocyst|Cyst and pseudocyst of pancreas
5780|Hematemesis|Hematemesis
5781|Blood in stool|Blood in stool
5789|Gastrointest hemorr NOS|Hemorrhage of gastrointestinal tract, unspecified
5793|Intest postop nonabsorb|Other and unspecified postsurgical nonabsorption
58381|Nephritis NOS in oth dis|Nephritis and nephropathy, not specified as acute or chronic, in diseases classified elsewhere
5845|Ac kidny fail, tubr necr|Acute kidney failure with lesion of tubular necrosis
5849|Acute kidney failure NOS|Acute kidney failure, unspecified
5852|Chr kidney dis stage II|Chronic kidney disease, Stage II (mild)
5853|Chr kidney dis stage III|Chronic kidney disease, Stage III (moderate)
5854|Chr kidney dis stage IV|Chronic kidney disease, Stage IV (severe)
5855|Chron kidney dis stage V|Chronic kidney disease, Stage V
5856|End stage renal disease|End stage renal disease
5859|Chronic kidney dis NOS|Chronic kidney disease, unspecified
586|Renal failure NOS|Renal failure, unspecified
58881|Sec hyperparathyrd-renal|Secondary hyperparathyroidism (of renal origin)
59010|Ac pyelonephritis NOS|Acute pyelonephritis without lesion of renal medullary necrosis
59080|Pyelonephritis NOS|Pyelonephritis, unspecified
591|Hydronephrosis|Hydronephrosis
5920|Calculus of kidney|Calculus of kidney
5921|Calculus of ureter|Calculus of ureter
5939|Renal & ureteral dis NOS|Unspecified disorder of kidney and ureter
5959|Cystitis NOS|Cystitis, unspecified
59654|Neurogenic bladder NOS|Neurogenic bladder NOS
5990|Urin tract infection NOS|Urinary tract infection, site not specified
59970|Hematuria, unspecified|Hematuria, unspecified
60000|BPH w/o urinary obs/LUTS|Hypertrophy (benign) of prostate without urinary obstruction and other lower urinary tract symptom (LUTS)
60001|BPH w urinary obs/LUTS|Hypertrophy (benign) of prostate with urinary obstruction and other lower urinary tract symptoms (LUTS)
6010|Acute prostatitis|Acute prostatitis
6039|Hydrocele NOS|Hydrocele, unspecified
60490|Orchitis/epididymit NOS|Orchitis and epididymitis, unspecified
60784|Impotence, organic orign|Impotence of organic origin
6089|Male genital dis NOS|Unspecified disorder of male genital organs
6149|Female PID NOS|Unspecified inflammatory disease of female pelvic organs and tissues
6184|Uterovaginal prolaps NOS|Uterovaginal prolapse, unspecified
6202|Ovarian cyst NEC/NOS|Other and unspecified ovarian cyst
6259|Fem genital sympt NOS|Unspecified symptom associated with female genital organs
6268|Menstrual disorder NEC|Other disorders of menstruation and other abnormal bleeding from female genital tract
6271|Postmenopausal bleeding|Postmenopausal bleeding
64231|Trans hyperten-delivered|Transient hypertension of pregnancy, delivered, with or without mention of antepartum condition
64241|Mild/NOS preeclamp-deliv|Mild or unspecified pre-eclampsia, delivered, with or without mention of antepartum condition
64251|Severe preeclamp-deliver|Severe pre-eclampsia, delivered, with or without mention of antepartum condition
64421|Early onset deliv-deliv|Early onset of delivery, delivered, with or without mention of antepartum condition
64511|Post term preg-delivered|Post term pregnancy, delivered, with or without mention of antepartum condition
64821|Anemia-delivered|Anemia of mother, delivered, with or without mention of antepartum condition
64881|Abn glucose-delivered|Abnormal maternal glucose tolerance, delivered, with or without mention of antepartum condition
64891|Curr cond NEC-delivered|Other current maternal conditions classifiable elsewhere, delivered, with or without mention of antepartum condition
650|Normal delivery|Normal delivery
65421|Prev c-delivery-deliver|Previous cesarean delivery, delivered, with or without mention of antepartum condition
65971|Abn fetal hrt rate-deliv|Abnormality in fetal heart rate or rhythm, delivered, with or without mention of antepartum condition
66331|Cord entangle NEC-deliv|Other and unspecified cord entanglement, without mention of compression, delivered, with or without mention of antepartum condition
66401|Del w 1 deg lacerat-del|First-degree perineal laceration, delivered, with or without mention of antepartum condition
66411|Del w 2 deg lacerat-del|Second-degree perineal laceration, delivered, with or without mention of antepartum condition
66612|Postpart hem NEC-del w p|Other immediate postpartum hemorrhage, delivered, with mention of postpartum complication
6822|Cellulitis of trunk|Cellulitis and abscess of trunk
6823|Cellulitis of arm|Cellulitis and abscess of upper arm and forearm
6826|Cellulitis of leg|Cellulitis and abscess of leg, except foot
6827|Cellulitis of foot|Cellulitis and abscess of foot, except toes
6829|Cellulitis NOS|Cellulitis and abscess of unspecified sites
6930|Drug dermatitis NOS|Dermatitis due to drugs and medicines taken internally
6961|Other psoriasis|Other psoriasis
70703|Pressure ulcer, low back|Pressure ulcer, lower back
70705|Pressure ulcer, buttock|Pressure ulcer, buttock
70707|Pressure ulcer, heel|Pressure ulcer, heel
70709|Pressure ulcer, site NEC|Pressure ulcer, other site
70710|Ulcer of lower limb NOS|Ulcer of lower limb, unspecified
70714|Ulcer of heel & midfoot|Ulcer of heel and midfoot
70715|Ulcer other part of foot|Ulcer of other part of foot
70722|Pressure ulcer,stage II|Pressure ulcer, stage II
70723|Pressure ulcer,stage III|Pressure ulcer, stage III
70724|Pressure ulcer,stage IV|Pressure ulcer, stage IV
7100|Syst lupus erythematosus|Systemic lupus erythematosus
7101|Systemic sclerosis|Systemic sclerosis
7140|Rheumatoid arthritis|Rheumatoid arthritis
71536|Loc prim osteoart-l/leg|Osteoarthrosis, localized, not specified whether primary or secondary, lower leg
71590|Osteoarthros NOS-unspec|Osteoarthrosis, unspecified whether generalized or localized, site unspecified
71941|Joint pain-shlder|Pain in joint, shoulder region
71946|Joint pain-l/leg|Pain in joint, lower leg
7200|Ankylosing spondylitis|Ankylosing spondylitis
7213|Lumbosacral spondylosis|Lumbosacral spondylosis without myelopathy
7224|Cervical disc degen|Degeneration of cervical intervertebral disc
72252|Lumb/lumbosac disc degen|Degeneration of lumbar or lumbosacral intervertebral disc
72400|Spinal stenosis NOS|Spinal stenosis, unspecified region
7242|Lumbago|Lumbago
7245|Backache NOS|Backache, unspecified
725|Polymyalgia rheumatica|Polymyalgia rheumatica
72888|Rhabdomyolysis|Rhabdomyolysis
7291|Myalgia and myositis NOS|Myalgia and myositis, unspecified
7295|Pain in limb|Pain in limb
73008|Ac osteomyelitis NEC|Acute osteomyelitis, other specified sites
73027|Osteomyelitis NOS-ankle|Unspecified osteomyelitis, ankle and foot
73300|Osteoporosis NOS|Osteoporosis, unspecified
73301|Senile osteoporosis|Senile osteoporosis
73313|Path fx vertebrae|Pathologic fracture of vertebrae
73314|Path fx neck of femur|Pathologic fracture of neck of femur
7454|Ventricular sept defect|Ventricular septal defect
7455|Secundum atrial sept def|Ostium secundum type atrial septal defect
7470|Patent ductus arteriosus|Patent ductus arteriosus
7580|Down's syndrome|Down's syndrome
76510|Preterm infant NEC wtNOS|Other preterm infants, unspecified [weight]
76514|Preterm NEC 1250-1499g|Other preterm infants, 1,250-1,499 grams
76515|Preterm NEC 1500-1749g|Other preterm infants, 1,500-1,749 grams
76516|Preterm NEC 1750-1999g|Other preterm infants, 1,750-1,999 grams
76517|Preterm NEC 2000-2499g|Other preterm infants, 2,000-2,499 grams
76518|Preterm NEC 2500+g|Other preterm infants, 2,500 grams and over
76524|27-28 comp wks gestation|27-28 completed weeks of gestation
76525|29-30 comp wks gestation|29-30 completed weeks of gestation
76526|31-32 comp wks gestation|31-32 completed weeks of gestation
76527|33-34 comp wks gestation|33-34 completed weeks of gestation
76528|35-36 comp wks gestation|35-36 completed weeks of gestation
7661|Heavy-for-date infan NEC|Other "heavy-for-dates" infants
769|Respiratory distress syn|Respiratory distress syndrome in newborn
7706|NB transitory tachypnea|Transitory tachypnea of newborn
7707|Perinatal chr resp dis|Chronic respiratory disease arising in the perinatal period
77081|Primary apnea of newborn|Primary apnea of newborn
77082|Other apnea of newborn|Other apnea of newborn
77089|NB respiratory prob NEC|Other respiratory problems after birth
77181|NB septicemia [sepsis]|Septicemia [sepsis] of newborn
7731|Hemolytic dis d/t ABO|Hemolytic disease of fetus or newborn due to ABO isoimmunization
7742|Neonat jaund preterm del|Neonatal jaundice associated with preterm delivery
7746|Fetal/neonatal jaund NOS|Unspecified fetal and neonatal jaundice
7750|Infant diabet mother syn|Syndrome of "infant of a diabetic mother"
7751|Neonat diabetes mellitus|Neonatal diabetes mellitus
7756|Neonatal hypoglycemia|Neonatal hypoglycemia
7766|Anemia of prematurity|Anemia of prematurity
77931|NB feeding problems|Feeding problems in newborn
77981|Neonatal bradycardia|Neonatal bradycardia
77989|Perinatal condition NEC|Other specified conditions originating in the perinatal period
78001|Coma|Coma
78009|Other alter consciousnes|Other alteration of consciousness
7802|Syncope and collapse|Syncope and collapse
78039|Convulsions NEC|Other convulsions
78060|Fever, unspecified|Fever, unspecified
78079|Malaise and fatigue NEC|Other malaise and fatigue
78097|Altered mental status|Altered mental status
7823|Edema|Edema
7824|Jaundice NOS|Jaundice, unspecified, not of newborn
78321|Loss of weight|Loss of weight
7840|Headache|Headache
7843|Aphasia|Aphasia
7847|Epistaxis|Epistaxis
7850|Tachycardia NOS|Tachycardia, unspecified
7851|Palpitations|Palpitations
7852|Undiag cardiac murmurs|Undiagnosed cardiac murmurs
7854|Gangrene|Gangrene
78550|Shock NOS|Shock, unspecified
78551|Cardiogenic shock|Cardiogenic shock
78552|Septic shock|Septic shock
78559|Shock w/o trauma NEC|Other shock without mention of trauma
78605|Shortness of breath|Shortness of breath
7862|Cough|Cough
78630|Hemoptysis NOS|Hemoptysis, unspecified
78650|Chest pain NOS|Chest pain, unspecified
78659|Chest pain NEC|Other chest pain
78701|Nausea with vomiting|Nausea with vomiting
78720|Dysphagia NOS|Dysphagia, unspecified
78791|Diarrhea|Diarrhea
78820|Retention urine NOS|Retention of urine, unspecified
7885|Oliguria & anuria|Oliguria and anuria
78900|Abdmnal pain unspcf site|Abdominal pain, unspecified site
78906|Abdmnal pain epigastric|Abdominal pain, epigastric
78959|Ascites NEC|Other ascites
7904|Abn serum enzyme lvl NEC|Nonspecific elevation of levels of transaminase or lactic acid dehydrogenase [LDH]
7907|Bacteremia|Bacteremia
79092|Abnormal coagultion prof|Abnormal coagulation profile
7910|Proteinuria|Proteinuria
79902|Hypoxemia|Hypoxemia
7991|Respiratory arrest|Respiratory arrest
7993|Debility NOS|Debility, unspecified
7994|Cachexia|Cachexia
80500|Fx cervical vert NOS-cl|Closed fracture of cervical vertebra, unspecified level
8052|Fx dorsal vertebra-close|Closed fracture of dorsal [thoracic] vertebra without mention of spinal cord injury
8054|Fx lumbar vertebra-close|Closed fracture of lumbar vertebra without mention of spinal cord injury
80701|Fracture one rib-closed|Closed fracture of one rib
80703|Fx three ribs-closed|Closed fracture of three ribs
8082|Fx pubis-closed|Closed fracture of pubis
81000|Fx clavicle NOS-closed|Closed fracture of clavicle, unspecified part
81201|Fx surg nck humerus-clos|Closed fracture of surgical neck of humerus
81342|Fx distal radius NEC-cl|Other closed fractures of distal end of radius (alone)
82000|Fx femur intrcaps NOS-cl|Closed fracture of intracapsular section of neck of femur, unspecified
82021|Fx intertrochanteric-cl|Closed fracture of intertrochanteric section of neck of femur
8208|Fx neck of femur NOS-cl|Closed fracture of unspecified part of neck of femur
8244|Fx bimalleolar-closed|Bimalleolar fracture, closed
8509|Concussion NOS|Concussion, unspecified
85200|Traum subarach hem|Subarachnoid hemorrhage following injury without mention of open intracranial wound, unspecified state of consciousness
85220|Subdural hem w/o coma|Subdural hemorrhage following injury without mention of open intracranial wound, unspecified state of consciousness
85221|Subdural hem-no coma|Subdural hemorrhage following injury without mention of open intracranial wound, with no loss of consciousness
85300|Brain hem NEC|Other and unspecified intracranial hemorrhage following injury without mention of open intracranial wound, unspecified state of consciousness
8600|Traum pneumothorax-close|Traumatic pneumothorax without mention of open wound into thorax
8604|Traum pneumohemothor-cl|Traumatic pneumohemothorax without mention of open wound into thorax
86121|Lung contusion-closed|Contusion of lung without mention of open wound into thorax
86402|Liver laceration, minor|Injury to liver without mention of open wound into cavity, laceration, minor
86502|Spleen capsular tear|Injury to spleen without mention of open wound into cavity, capsular tears, without major disruption of parenchyma
8730|Open wound of scalp|Open wound of scalp, without mention of complication
920|Contusion face/scalp/nck|Contusion of face, scalp, and neck except eye(s)
9248|Contusion mult site NEC|Contusion of multiple sites, not elsewhere classified
9584|Traumatic shock|Traumatic shock
9597|Knee/leg injury NOS|Knee, leg, ankle, and foot injury
96500|Poisoning-opium NOS|Poisoning by opium (alkaloids), unspecified
96501|Poisoning-heroin|Poisoning by heroin
96502|Poisoning-methadone|Poisoning by methadone
96509|Poisoning-opiates NEC|Poisoning by other opiates and related narcotics
9654|Pois-arom analgesics NEC|Poisoning by aromatic analgesics, not elsewhere classified
9670|Poisoning-barbiturates|Poisoning by barbiturates
96900|Pois-antidepressant NOS|Poisoning by antidepressant, unspecified
9694|Pois-benzodiazepine tran|Poisoning by benzodiazepine-based tranquilizers
9700|Pois-analeptics|Poisoning by analeptics
9800|Toxic eff ethyl alcohol|Toxic effect of ethyl alcohol
9920|Heat stroke & sunstroke|Heat stroke and sunstroke
99590|SIRS, unspecified|Systemic inflammatory response syndrome, unspecified
99591|Sepsis|Sepsis
99592|Severe sepsis|Severe sepsis
99593|SIRS-noninf w/o org dys|Systemic inflammatory response syndrome due to noninfectious process without acute organ dysfunction
99594|SIRS-noninf w ac org dys|Systemic inflammatory response syndrome due to noninfectious process with acute organ dysfunction
99602|Malfunc prosth hrt valve|Mechanical complication due to heart valve prosthesis
99631|Malfunc urethral cath|Mechanical complication due to urethral [indwelling] catheter
99662|React-oth vasc dev/graft|Infection and inflammatory reaction due to other vascular device, implant, and graft
99664|React-indwell urin cath|Infection and inflammatory reaction due to indwelling urinary catheter
99666|React-inter joint prost|Infection and inflammatory reaction due to internal joint prosthesis
99672|Comp-oth cardiac device|Other complications due to other cardiac device, implant, and graft
99673|Comp-renal dialys device|Other complications due to renal dialysis device, implant, and graft
99674|Comp-oth vasc dev/graft|Other complications due to other vascular device, implant, and graft
99681|Compl kidney transplant|Complications of transplanted kidney
99682|Compl liver transplant|Complications of transplanted liver
9971|Surg compl-heart|Cardiac complications, not elsewhere classified
99731|Ventltr assoc pneumonia|Ventilator associated pneumonia
99739|Respiratory comp NEC|Other respiratory complications
99749|Oth digestv syst complic|Other digestive system complications
99811|Hemorrhage complic proc|Hemorrhage complicating a procedure
99812|Hematoma complic proc|Hematoma complicating a procedure
9982|Accidental op laceration|Accidental puncture or laceration during a procedure, not elsewhere classified
99832|Disrup-external op wound|Disruption of external operation (surgical) wound
99859|Other postop infection|Other postoperative infection
E8120|Mv collision NOS-driver|Other motor vehicle traffic accident involving collision with motor vehicle injuring driver of motor vehicle other than motorcycle
E8147|Mv acc-pedestrian|Motor vehicle traffic accident involving collision with pedestrian injuring pedestrian
E8160|Loss control mv-driver|Motor vehicle traffic accident due to loss of control, without collision on the highway, injuring driver of motor vehicle other than motorcycle
E8191|Mv traffic acc NOS-pass|Motor vehicle traffic accident of unspecified nature injuring passenger in motor vehicle other than motorcycle
E8192|Mv traffic acc NOS-motcy|Motor vehicle traffic accident of unspecified nature injuring motorcyclist
E8490|Accid in home|Home accidents
E8497|Accid in resident instit|Accidents occurring in residential institution
E8498|Accident in place NEC|Accidents occurring in other specified places
E8499|Accident in place NOS|Accidents occurring in unspecified place
E8502|Acc poison-opiates NEC|Accidental poisoning by other opiates and related narcotics
E8781|Abn react-implant device|Surgical operation with implant of artificial internal device causing abnormal patient reaction, or later complication, without mention of misadventure at time of operation
E8782|Abn react-anastom/graft|Surgical operation with anastomosis, bypass, or graft, with natural or artificial tissues used as implant causing abnormal patient reaction, or later complication, without mention of misadventure at time of operation
E8788|Abn react-surg proc NEC|Other specified surgical operations and procedures causing abnormal patient reaction, or later complication, without mention of misadventure at time of operation
E8798|Abn react-procedure NEC|Other specified procedures as the cause of abnormal reaction of patient, or of later complication, without mention of misadventure at time of procedure
E8809|Fall on stair/step NEC|Accidental fall on or from other stairs or steps
E8859|Fall from slipping NEC|Fall from other slipping, tripping, or stumbling
E8889|Fall NOS|Unspecified fall
E9300|Adv eff penicillins|Penicillins causing adverse effects in therapeutic use
E9320|Adv eff corticosteroids|Adrenal cortical steroids causing adverse effects in therapeutic use
E9331|Adv eff antineoplastic|Antineoplastic and immunosuppressive drugs causing adverse effects in therapeutic use
E9342|Adv eff anticoagulants|Anticoagulants causing adverse effects in therapeutic use
E9352|Adv eff opiates|Other opiates and related narcotics causing adverse effects in therapeutic use
E9394|Adv eff benzodiaz tranq|Benzodiazepine-based tranquilizers causing adverse effects in therapeutic use
E9420|Adv eff antiarrhyth agt|Cardiac rhythm regulators causing adverse effects in therapeutic use
E9444|Adv eff diuretics NEC|Other diuretics causing adverse effects in therapeutic use
E9500|Suicide-analgesics|Suicide and self-inflicted poisoning by analgesics, antipyretics, and antirheumatics
E9503|Suicide-tranquilizer NEC|Suicide and self-inflicted poisoning by tranquilizers and other psychotropic agents
E9654|Assault-firearm NEC|Assault by other and unspecified firearm
E966|Assault-cutting instr|Assault by cutting and piercing instrument
E9800|Poison-analgesic undeter|Poisoning by analgesics, antipyretics, and antirheumatics, undetermined whether accidentally or purposely inflicted
V0254|Carrier/suspect MRSA|Carrier or suspected carrier of Methicillin resistant Staphylococcus aureus
V053|Need prphyl vc vrl hepat|Need for prophylactic vaccination and inoculation against viral hepatitis
V090|Inf mcrg rstn pncllins|Infection with microorganisms resistant to penicillins
V1005|Hx of bowel malignancy|Personal history of malignant neoplasm of large intestine
V1011|Hx of bronchogenic malig|Personal history of malignant neoplasm of bronchus and lung
V103|Hx of breast malignancy|Personal history of malignant neoplasm of breast
V1046|Hx of prostatic malign|Personal history of malignant neoplasm of prostate
V1251|Hx venous thrombosis|Personal history of venous thrombosis and embolism
V1254|Hx TIA/stroke w/o resid|Personal history of transient ischemic attack (TIA), and cerebral infarction without residual deficits
V1259|Hx-circulatory dis NEC|Personal history of other diseases of circulatory system
V140|Hx-penicillin allergy|Personal history of allergy to penicillin
V142|Hx-sulfa allergy|Personal history of allergy to sulfonamides
V1581|Hx of past noncompliance|Personal history of noncompliance with medical treatment, presenting hazards to health
V1582|History of tobacco use|Personal history of tobacco use
V1588|History of fall|History of fall
V163|Fam hx-breast malig|Family history of malignant neoplasm of breast
V173|Fam hx-ischem heart dis|Family history of ischemic heart disease
V222|Preg state, incidental|Pregnant state, incidental
V270|Deliver-single liveborn|Outcome of delivery, single liveborn
V272|Deliver-twins, both live|Outcome of delivery, twins, both liveborn
V290|NB obsrv suspct infect|Observation for suspected infectious condition
V293|NB obs genetc/metabl cnd|Observation for suspected genetic or metabolic condition
V3000|Single lb in-hosp w/o cs|Single liveborn, born in hospital, delivered without mention of cesarean section
V3001|Single lb in-hosp w cs|Single liveborn, born in hospital, delivered by cesarean section
V3100|Twin-mate lb-hosp w/o cs|Twin birth, mate liveborn, born in hospital, delivered without mention of cesarean section
V3101|Twin-mate lb-in hos w cs|Twin birth, mate liveborn, born in hospital, delivered by cesarean section
V420|Kidney transplant status|Kidney replaced by transplant
V427|Liver transplant status|Liver replaced by transplant
V433|Heart valve replac NEC|Heart valve replaced by other means
V4364|Hip joint replacement|Hip joint replaced by other means
V4365|Knee joint replacement|Knee joint replaced by other means
V440|Tracheostomy status|Tracheostomy status
V441|Gastrostomy status|Gastrostomy status
V443|Colostomy status|Colostomy status
V4501|Status cardiac pacemaker|Cardiac pacemaker in situ
V4502|Status autm crd dfbrltr|Automatic implantable cardiac defibrillator in situ
V4511|Renal dialysis status|Renal dialysis status
V4573|Acq absence of kidney|Acquired absence of kidney
V4581|Aortocoronary bypass|Aortocoronary bypass status
V4582|Status-post ptca|Percutaneous transluminal coronary angioplasty status
V4611|Dependence on respirator|Dependence on respirator, status
V462|Depend-supplement oxygen|Dependence on supplemental oxygen
V4986|Do not resusctate status|Do not resuscitate status
V502|Routine circumcision|Routine or ritual circumcision
V5811|Antineoplastic chemo enc|Encounter for antineoplastic chemotherapy
V5861|Long-term use anticoagul|Long-term (current) use of anticoagulants
V5863|Long-term antiplatlet|Long-term (current) use of antiplatelet/antithrombotic
V5865|Long-term use steroids|Long-term (current) use of steroids
V5866|Long-term use of aspirin|Long-term (current) use of aspirin
V5867|Long-term use of insulin|Long-term (current) use of insulin
V5869|Long-term use meds NEC|Long-term (current) use of other medications
V600|Lack of housing|Lack of housing
V6284|Suicidal ideation|Suicidal ideation
V6441|Lap surg convert to open|Laparoscopic surgical procedure converted to open procedure
V667|Encountr palliative care|Encounter for palliative care
V8541|BMI 40.0-44.9, adult|Body Mass Index 40.0-44.9, adult
"""
