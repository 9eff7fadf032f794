"""Run in a fresh Python process: reload an export with plain transformers and save its outputs.

Usage: python reload_export.py EXPORT_DIR AUTO_CLASS INPUTS.pt OUTPUT.pt [generate]
Imports nothing from aptune, to prove the export stands on its own.
"""

import sys

import torch
import transformers

export_dir, auto_name, inputs_path, output_path = sys.argv[1:5]
mode = sys.argv[5] if len(sys.argv) > 5 else "forward"
assert "aptune" not in sys.modules
model = getattr(transformers, auto_name).from_pretrained(export_dir, trust_remote_code=True).eval()
inputs = torch.load(inputs_path, weights_only=True)
with torch.no_grad():
    if mode == "generate":
        result = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    else:
        result = model(**inputs).logits
assert not any(name.startswith("aptune") for name in sys.modules), "the reload imported aptune"
torch.save({"result": result, "params": sum(p.numel() for p in model.parameters())}, output_path)
