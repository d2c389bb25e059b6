"""Recorded numbers for `imlca report --paper`: Ā with ViT-B/16 per benchmark and method, as mean and sample std
over three seeds where more than one run was recorded (std None: one number).

IM, IM+CA, IM+LCA: the LCA paper's Table 1. SLCA, EASE, MOS: the runs its authors recorded beside them
(github.com/tungts1101/LCA @ 3e6670b, visualization.py `results`, the last entry of each run: SLCA lines 843, 943,
1043, 1143, 1243, 1341, 1440; EASE 863, ...; MOS 823, ...; mean ± std with ddof 1), on the same 10-task splits
(VTAB 5) with shuffled class orders (seeds 1993-1995). Whether those runs were scored task-balanced (the paper's
Ā) or sample-weighted (LAMDA-PILOT's) is not recorded: both are logged by every run here.
"""

BENCHMARKS = ("cifar100", "imagenet_r", "imagenet_a", "cub", "omnibenchmark", "vtab", "cars")


def _row(*cells):
    return dict(zip(BENCHMARKS, cells))


RECORDED = {  # method → benchmark → (mean, std or None), percent
    "im": _row(*((v, None) for v in (92.82, 84.28, 66.52, 86.67, 81.12, 84.61, 70.13))),
    "im_ca": _row(*((v, None) for v in (94.00, 85.20, 72.25, 89.79, 81.24, 94.27, 75.71))),
    "im_lca": _row(*((v, None) for v in (94.80, 85.83, 74.99, 90.80, 81.40, 95.21, 76.16))),
    "slca": _row((93.70, 0.33), (85.14, 0.28), (45.13, 19.8), (90.21, 0.90), (82.67, 0.61), (91.08, 3.38),
                 (74.58, 2.16)),
    "ease": _row((91.69, 0.33), (82.41, 0.46), (67.77, 1.84), (89.49, 1.23), (80.78, 0.15), (93.28, 0.12),
                 (48.08, 1.19)),
    "mos": _row((94.29, 0.31), (83.35, 0.60), (67.60, 1.98), (92.33, 0.61), (86.09, 0.68), (92.42, 0.53),
                (71.41, 19.6)),
}
