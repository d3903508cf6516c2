"""What each metric means and what good looks like: one line per metric, for the report and docs."""

from __future__ import annotations

import re

# (pattern on the metric name's last part, ideal, reading). First match wins.
_HELP: list[tuple[str, str, str]] = [
    (
        r"stratum/[^/]+/ks$",
        "≈ holdout",
        "KS distance of the gap (or stay) distributions within one age x sex stratum",
    ),
    (r"stratum_ks_worst$", "≈ holdout", "largest per-stratum KS distance of the gaps (or stays)"),
    (r"stratum_ks_mean$", "≈ holdout", "mean per-stratum KS distance of the gaps (or stays)"),
    (
        r"gap/ks$",
        "0",
        "KS distance between the distributions of the gap from a visit's end to the next admission",
    ),
    (r"gap/w1_days$", "0", "Wasserstein-1 distance between the gap distributions (days)"),
    (r"stay/ks$", "0", "KS distance between the length-of-stay distributions"),
    (r"stay/w1_days$", "0", "Wasserstein-1 distance between the length-of-stay distributions (days)"),
    (r"readmit30/ratio$", "1", "share of visits followed by an admission within 30 days, synthetic / real"),
    (
        r"readmit30/real$",
        "-",
        "share of real visits followed by an admission within 30 days of the discharge",
    ),
    (
        r"readmit30/\w+$",
        "= real",
        "share of the compared cohort's visits followed by an admission within 30 days",
    ),
    (
        r"gap_given_category_r2$",
        "1",
        "R^2 of the mean log(1 + gap days) after visits holding each frequent category, vs real",
    ),
    (r"jsd$", "0", "Jensen-Shannon divergence of code frequencies (bits); 0 same distribution, 1 disjoint"),
    (r"prevalence_r2$", "1", "R^2 of synthetic vs real per-code patient prevalence around the identity line"),
    (r"prevalence_pearson$", "1", "linear correlation of per-code prevalence (ignores scale errors)"),
    (r"top\d+_overlap$", "1", "share of the real top-k codes (by prevalence) also in the synthetic top-k"),
    (r"cooccurrence_r2$", "1", "R^2 of within-visit code-pair frequencies (pairs per visit)"),
    (
        r"cooccurrence_cross_type_r2$",
        "1",
        "R^2 of within-visit frequencies of pairs of two event types (a diagnosis with a medication, ...)",
    ),
    (r"cooccurrence_score_ratio$", "1", "partners per code, synthetic / real; <1 too sparse, >1 too mixed"),
    (r"cooccurrence_score_real$", "-", "mean number of distinct within-visit partners per real code"),
    (r"cooccurrence_score$", "= real", "mean number of distinct within-visit partners per compared code"),
    (r"transition_r2$", "1", "R^2 of code-to-next-visit-code transition frequencies"),
    (r"ks_visits_per_patient$", "0", "KS distance between visits-per-patient distributions"),
    (r"ks_codes_per_visit$", "0", "KS distance between distinct-codes-per-visit distributions"),
    (r"_pvalue$", "> 0.05", "asymptotic KS p-value; tiny values are expected for large cohorts"),
    (r"recall_head$", "1", "share of the most frequent real codes (first 50% of occurrences) generated"),
    (r"recall_torso$", "1", "share of mid-frequency real codes (50-90% of occurrences) generated"),
    (r"recall_tail$", "= holdout", "share of rare real codes (last 10% of occurrences) generated"),
    (r"carry_over_ratio$", "1", "share of a visit's codes repeated in the next visit, synthetic / real"),
    (
        r"carry_over_real$",
        "-",
        "share of a real visit's codes the next visit holds again (chronic conditions)",
    ),
    (r"carry_over$", "= real", "share of a visit's codes the next visit holds again, compared cohort"),
    (r"visits_per_patient_mean_ratio$", "1", "mean visits per patient, synthetic / real"),
    (r"visits_per_patient_mean_real$", "-", "mean visits per real patient"),
    (r"visits_per_patient_mean$", "= real", "mean visits per patient of the compared cohort"),
    (r"codes_per_visit_mean_ratio$", "1", "mean distinct codes per visit, synthetic / real"),
    (r"codes_per_visit_mean_real$", "-", "mean distinct codes per real visit"),
    (r"codes_per_visit_mean$", "= real", "mean distinct codes per visit of the compared cohort"),
    (
        r"age_profile_gap$",
        "≈ holdout",
        "per-code mean age of its patients: patient-weighted mean gap (years)",
    ),
    (r"female_profile_gap$", "≈ holdout", "per-code female share of its patients: patient-weighted mean gap"),
    (r"profile_tokens$", "-", "codes held by enough real patients to compare their age and sex profiles"),
    (r"n_real$|n_synthetic$", "-", "patients in the stratum"),
    (
        r"accuracy/synthetic$",
        "= holdout",
        "demographic classifier (trained on real) agrees with stated labels",
    ),
    (r"accuracy/holdout$", "-", "the same classifier on real held-out patients: the attainable reference"),
    (r"accuracy/ratio$", "1", "synthetic / holdout classifier accuracy"),
    (r"violation_rate", "0", "share of patients with a code their sex/age rules out"),
    (r"violating_code_rate$", "0", "share of code occurrences ruled out by the patient's sex/age"),
    (r"duplicate_rate$", "0", "share of code occurrences repeating a code already in the same visit"),
    (r"unknown_code_rate$", "0", "share of code occurrences outside the real vocabulary"),
    (
        r"invalid_format_rate$",
        "0",
        "share of code occurrences that are not well-formed diagnosis, procedure or medication codes",
    ),
    (r"empty_visit_rate$", "0", "share of visits without codes"),
    (r"empty_patient_rate$", "0", "share of patients without any code"),
    (
        r"dcr_train_median$",
        "≈ holdout",
        "median distance from a synthetic record to its closest train record",
    ),
    (r"dcr_train_p05$", "≈ holdout", "5th percentile of that distance; 0 means many near-copies"),
    (r"dcr_holdout_median$", "-", "median distance to the closest holdout record (reference for DCR train)"),
    (r"dcr_holdout_p05$", "-", "5th percentile distance to the closest holdout record"),
    (r"copy_rate$", "low", "share of synthetic records identical to some train record (all of train)"),
    (
        r"copy_rate_holdout$",
        "-",
        "share identical to a record of the same-size holdout set: the chance level",
    ),
    (r"copy_rate_excess$", "0", "copies of a same-size train subset minus copies of the holdout"),
    (
        r"share_closer_to_train$",
        "0.5",
        "share of synthetic records closer to train than to a same-size holdout",
    ),
    (r"nnaa_train$", "0.5", "NN adversarial accuracy, train vs synthetic; < 0.5 records too close"),
    (r"nnaa_holdout$", "0.5", "NN adversarial accuracy, holdout vs synthetic"),
    (r"nnaar$", "0", "NNAA(holdout) - NNAA(train): privacy loss; > 0 the model memorises"),
    (r"mia_advantage$", "0", "best TPR - FPR of 'member if close to a synthetic record'"),
    (r"mia_accuracy$", "0.5", "balanced accuracy of that membership attack"),
    (r"mia_auroc$", "0.5", "AUROC of that membership attack"),
    (r"f1_train$", "= f1_holdout", "F1 of unknown codes guessed from the nearest synthetic record (members)"),
    (r"f1_holdout$", "-", "the same guess for non-members: what the data reveals about anyone"),
    (r"attribute/advantage$", "0", "attribute-inference F1 gain on members over non-members"),
    (r"auroc_trtr$", "-", "AUROC on holdout of a classifier trained on real data"),
    (r"auroc_tstr$", "= TRTR", "AUROC on holdout of a classifier trained on synthetic data"),
    (r"auroc_ratio$", "1", "TSTR / TRTR AUROC"),
    (r"perplexity$", "low", "exp(mean NLL) of real code tokens under the model (teacher-forced)"),
    (r"recon_jaccard$", "1", "Jaccard of the greedily completed second half of a patient's codes"),
    (
        r"(first_)?stop_calibration$",
        "1",
        "expected / observed ends of patients (teacher-forced); >1 too few visits",
    ),
    (r"visit_end_calibration$", "1", "expected / observed ends of visits (teacher-forced); >1 too few codes"),
    (
        r"carry_calibration$",
        "1",
        "expected / observed codes repeated from the previous visit (teacher-forced)",
    ),
    (
        r"age_(first_visit|later_visits)_calibration$",
        "1",
        "spread of codes over ages, model / data (teacher-forced); <1 drawn to middle age",
    ),
]


def describe(name: str) -> tuple[str, str]:
    """``(ideal, reading)`` of a metric key; ``("", "")`` when unknown."""
    for pattern, ideal, reading in _HELP:
        if re.search(pattern, name):
            return ideal, reading
    return "", ""
