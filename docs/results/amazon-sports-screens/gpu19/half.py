"""Round every float32 tensor of the given safetensors files to float16, in place: the GPU sweep's models
travel back to the 2-core machine under a size limit (8 files, 64 MB). Loading copies them into float32
parameters again; the rounding (relative 2^-11) is the same for every compared model."""

import sys

import torch
from safetensors.torch import load_file, save_file

for path in sys.argv[1:]:
    tensors = load_file(path)
    save_file({k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}, path)
    print(path, "float16")
