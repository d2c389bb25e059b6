"""Configuration: typed experiment (`experiment.py`) and sweep (`sweep.py`) schemas, and the strict YAML loading
both share (`loading.py`). Importing it loads no torch: choices are checked against `imlca.registries`."""
from imlca.config.data import DataConfig
from imlca.config.ease import EASEConfig
from imlca.config.experiment import (AlignConfig, EvalConfig, ExperimentConfig, LoRAConfig, MergeConfig, ModelConfig,
                                     ResourcesConfig, RobustnessConfig, TrackingConfig, TrainConfig, fingerprint,
                                     load_config, save_config)
from imlca.config.loading import (bundled_names, bundled_sweep, config_path, flatten, from_dict, merge_trees,
                                  parse_override, read_config_tree, read_yaml, set_dotted, to_dict)
from imlca.config.mos import MOSConfig
from imlca.config.slca import SLCAConfig

__all__ = ["AlignConfig", "DataConfig", "EASEConfig", "EvalConfig", "ExperimentConfig", "LoRAConfig", "MergeConfig",
           "ModelConfig", "MOSConfig", "ResourcesConfig", "RobustnessConfig", "SLCAConfig", "TrackingConfig", "TrainConfig",
           "bundled_names", "bundled_sweep", "config_path", "fingerprint", "flatten", "from_dict", "load_config",
           "merge_trees", "parse_override", "read_config_tree", "read_yaml", "save_config", "set_dotted", "to_dict"]
