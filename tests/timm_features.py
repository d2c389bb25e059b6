"""The smallest model `engine.loops.run_epochs` trains: a timm backbone's pre-logits features, used by the
transcription tests (tests/test_*_authors_terms.py) where the authors' code is a bare timm ViT."""
from torch import nn


class Ours(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def features(self, x):
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def freeze_statistics(self):
        return self.eval()
