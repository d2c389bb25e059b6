"""Models: timm backbones, LoRA through peft, the growing multi-head classifier."""
from imlca.models.backbone import create_backbone
from imlca.models.model import IncrementalModel, build_model

__all__ = ["IncrementalModel", "build_model", "create_backbone"]
