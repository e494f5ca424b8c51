"""What the GPU options say on a machine where torch sees no GPU (the ``one_gpu`` fixture, in conftest.py,
pretends one)."""

NO_GPU = (
    "error: --device cuda: no CUDA device is visible (torch.cuda.is_available() is False); use --device cpu"
)
