"""The main job: PAD against its backbone on a default dataset, printed as one table.

Pre-trains SASRec, embeds item titles with MiniLM, aligns, disentangles, and compares backbone,
aligned tower and PAD under the full-ranking leave-one-out protocol, overall and per popularity bin.
Runs on CPU in minutes on ml-100k; PADREC_DEMO_DATASET / PADREC_DEMO_EPOCHS / PADREC_DEMO_RUN change it.
"""

from __future__ import annotations

import os
from pathlib import Path

from padrec.data.registry import load_dataset
from padrec.data.split import leave_one_out
from padrec.eval.runreport import pad_report
from padrec.pad.pipeline import DEFAULT_PRESET, comparison_table, run_pad, with_preset


def main() -> None:
    dataset = os.environ.get("PADREC_DEMO_DATASET", "ml-100k")
    epochs = int(os.environ.get("PADREC_DEMO_EPOCHS", "40"))
    run_dir = Path(os.environ.get("PADREC_DEMO_RUN", f"runs/demo-{dataset}-{DEFAULT_PRESET}"))
    split = leave_one_out(load_dataset(dataset))
    # padrec's default PAD configuration (the preset chosen on validation users), as `padrec pad` runs it
    overrides = with_preset(None, {"backbone.max_epochs": epochs, "max_epochs": epochs, "backbone.max_len": 50})
    out = run_pad(split, run_dir, backbone="sasrec", encoder="minilm", overrides=overrides)
    report = pad_report(run_dir, split.dataset, out.results)
    print(comparison_table(out.results))
    print(f"\nrun directory: {run_dir} (re-running reuses finished stages); report: {report}")


if __name__ == "__main__":
    main()
