"""The paper's reported numbers (DESIGN §2, Table 1: Ā with ViT-B/16), for `imlca report --paper`."""

TABLE1 = {  # benchmark → method → Ā (percent)
    "cifar100": {"im": 92.82, "im_ca": 94.00, "im_lca": 94.80},
    "imagenet_r": {"im": 84.28, "im_ca": 85.20, "im_lca": 85.83},
    "imagenet_a": {"im": 66.52, "im_ca": 72.25, "im_lca": 74.99},
    "cub": {"im": 86.67, "im_ca": 89.79, "im_lca": 90.80},
    "omnibenchmark": {"im": 81.12, "im_ca": 81.24, "im_lca": 81.40},
    "vtab": {"im": 84.61, "im_ca": 94.27, "im_lca": 95.21},
    "cars": {"im": 70.13, "im_ca": 75.71, "im_lca": 76.16},
}
