"""Published D4RL normalised scores, with their sources, looked up by the dataset of the same name: the sweep's
results table prints them beside each algorithm's score."""

from __future__ import annotations

import math
import re

PUBLISHED_SOURCES = {
    "OfflineRL-Kit": (
        "OfflineRL-Kit README (github.com/yihaosun1124/OfflineRL-Kit), table 'Benchmark Results (4 seeds)': "
        "D4RL -v2 datasets, normalised score, mean ± std over 4 seeds"
    ),
    "MOPO paper": (
        "Yu et al. 2020, MOPO (arXiv:2005.13239), Table 1: D4RL -v0 datasets, normalised score at the last "
        "iteration, mean ± std over 6 seeds (halfcheetah-random only)"
    ),
}
"""Where each published figure comes from (the keys label the figures in the table)."""

PUBLISHED: dict[tuple[str, str], dict[tuple[str, str], tuple[float, float]]] = {
    # OfflineRL-Kit README, "Benchmark Results (4 seeds)", MOPO column (D4RL -v2).
    ("mopo", "OfflineRL-Kit"): {
        ("halfcheetah", "medium"): (72.4, 4.2),
        ("hopper", "medium"): (62.8, 38.1),
        ("walker2d", "medium"): (84.1, 3.2),
        ("halfcheetah", "medium-replay"): (72.1, 3.8),
        ("hopper", "medium-replay"): (92.7, 20.7),
        ("walker2d", "medium-replay"): (85.9, 5.3),
        ("halfcheetah", "medium-expert"): (83.6, 12.5),
        ("hopper", "medium-expert"): (74.6, 44.2),
        ("walker2d", "medium-expert"): (108.2, 4.3),
    },
    # OfflineRL-Kit README, "Benchmark Results (4 seeds)", COMBO column (D4RL -v2).
    ("combo", "OfflineRL-Kit"): {
        ("halfcheetah", "medium"): (71.9, 8.5),
        ("hopper", "medium"): (84.7, 9.3),
        ("walker2d", "medium"): (83.9, 2.0),
        ("halfcheetah", "medium-replay"): (66.5, 6.5),
        ("hopper", "medium-replay"): (90.1, 25.2),
        ("walker2d", "medium-replay"): (89.4, 6.4),
        ("halfcheetah", "medium-expert"): (98.2, 0.2),
        ("hopper", "medium-expert"): (108.8, 2.6),
        ("walker2d", "medium-expert"): (110.0, 0.2),
    },
    # MOPO paper (Yu et al. 2020, arXiv:2005.13239), Table 1, D4RL -v0, mean ± std over 6 seeds. Only the
    # entry we could check against the paper's text is kept: the table's first row as extracted from the
    # PDF ("random halfcheetah 2.1 35.4 ± 2.5 ..."); the text of the later rows was not available to check.
    # The rest of this table, COMBO's Table 1 and ARMOR's Table 1 are left out (see PUBLISHED_NOTE): the
    # copies of them found were secondary (plotting scripts, baseline lists, another paper's table), not
    # attributed to a table or version, and disagree with one another (e.g. MOPO walker2d-medium 17.8 vs
    # 11.8 vs 14.0), so none was copied.
    ("mopo", "MOPO paper"): {
        ("halfcheetah", "random"): (35.4, 2.5),
    },
}
"""Published D4RL normalised scores: (algo, source) -> (env, level) -> (mean, std); std is ``nan`` where the
source gives none (the table then shows the mean alone)."""

PUBLISHED_NOTE = (
    "Published figures are for the D4RL datasets of the same name (MuJoCo-py environments, D4RL's "
    "behaviour policies); the simloop datasets are regenerated on Gymnasium v5 with their own "
    "behaviour policies, so they are comparable in level, not identical data. Included: OfflineRL-Kit's "
    "MOPO and COMBO columns (-v2; medium, medium-replay, medium-expert) and one entry of MOPO's Table 1 "
    "(-v0; halfcheetah-random). Not included: the other rows of MOPO's Table 1 (random, medium, mixed, "
    "medium-expert), COMBO's Table 1 and ARMOR's Table 1, whose text could not be checked against the "
    "papers; ARMOR has no published figure here."
)

_DATASET_RE = re.compile(r"^(?:[^/]+/)?(?P<env>[A-Za-z0-9]+)/(?P<level>[a-z-]+)-v\d+$")


def format_published(mean: float, std: float, source: str) -> str:
    """One published figure for the table: ``mean ± std (source)``, or ``mean (source)`` when std is nan."""
    return f"{mean:.1f} ({source})" if math.isnan(std) else f"{mean:.1f} ± {std:.1f} ({source})"


def published_for(algo: str, dataset: str) -> list[tuple[float, float, str]]:
    """Published ``(mean, std, source)`` figures for the D4RL dataset named like ``dataset``
    (``<namespace>/<env>/<level>-v<k>``); empty when none is known."""
    m = _DATASET_RE.match(dataset)
    if m is None:
        return []
    key = (m["env"].lower(), m["level"])
    return [(*table[key], src) for (a, src), table in PUBLISHED.items() if a == algo and key in table]
