"""Load every model file in a folder with this checkout's code; print a digest of each.

    PYTHONPATH=<checkout> python scripts/model_digest.py agedistill/assets

The digest covers the config, every tensor and the network's output on a fixed input, so two
checkouts that print the same digests load the files into the same network. The file also loads
through ``predict``'s :func:`load_age_model`. It runs against code before and after the move to
subpackages (it tries both import paths).
"""

import hashlib
import json
import sys
from pathlib import Path

import torch

import agedistill

try:
    from agedistill.models.files import load_model
    from agedistill.serving.loading import load_age_model
except ImportError:
    from agedistill.models.files import load_model
    from agedistill.serving.loading import load_age_model
print("code:", agedistill.__file__)
for pt in sorted(Path(sys.argv[1]).glob("*.pt")):
    model, config = load_model(pt)
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.contiguous().numpy().tobytes())
    torch.manual_seed(0)
    side = config["input_size"]
    ranking = config["arch"] == "rank_teacher"  # reads sequences of K faces
    x = torch.rand(4, config["k"], 3, side, side) if ranking else torch.rand(4, 3, side, side)
    with torch.inference_mode():
        out = model.eval()(x)
    h.update(out.numpy().tobytes())
    served = "-" if ranking else type(load_age_model(pt)).__name__  # predict loads it too
    print(pt.name, type(model).__name__, h.hexdigest()[:16], served)
