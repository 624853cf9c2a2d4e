"""msc: music/speech labelling for whole audio archives (the library; no Ray in it).

Importing ``msc_core`` turns on TensorFlow's oneDNN kernels unless the
environment says otherwise (``TF_ENABLE_ONEDNN_OPTS``): TensorFlow leaves them
off on CPUs other than Intel's, where they run the model about 6 times faster
with probabilities equal to within 1e-6 (``benchmarks/bench_profile.py``; the
model card). It takes effect when TensorFlow is imported after ``msc_core``, as
every msc command and Ray worker does.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
