"""The programs a user would run instead of convnet, run by `convnet bench` side by side with it."""
__all__: list[str] = []
