"""How models train: the loop behind `fit`/`evaluate`/`predict` (`loop`), what it accepts as data (`inputs`),
how each step executes on a device (`engine`, with CUDA graphs in `graphs`), checkpoints for exact resume
(`checkpoint`) and the progress display (`progress`)."""
from convnet.training.checkpoint import TrainingState
from convnet.training.engine import Engine
from convnet.training.loop import TrainingInterrupted, evaluate, fit, predict

__all__ = ["fit", "evaluate", "predict", "TrainingInterrupted", "Engine", "TrainingState"]
