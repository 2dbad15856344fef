"""A training run: the `convnet train` job as a function, its configuration and its run folder."""
from convnet.runs.train import (
                                CHECKPOINTS,
                                CONFIG_FILE,
                                RunResult,
                                TrainConfig,
                                environment,
                                load_config,
                                load_split,
                                prepare_folder,
                                train,
)

__all__ = ["TrainConfig", "RunResult", "train", "load_config", "load_split", "prepare_folder", "environment",
           "CONFIG_FILE", "CHECKPOINTS"]
