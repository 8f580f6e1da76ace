"""The main job: train a sequential backbone and compare it with popularity, printed as one table.

Runs on CPU in a few minutes on ml-100k (override with PADREC_DEMO_DATASET / PADREC_DEMO_EPOCHS).
"""

from __future__ import annotations

import os
import tempfile

from padrec.data.registry import load_dataset
from padrec.data.split import leave_one_out
from padrec.eval.evaluator import Evaluator
from padrec.eval.protocol import Protocol
from padrec.models.sequential import SASRec
from padrec.models.simple import Pop
from padrec.train.config import resolve


def main() -> None:
    dataset = os.environ.get("PADREC_DEMO_DATASET", "ml-100k")
    epochs = int(os.environ.get("PADREC_DEMO_EPOCHS", "60"))
    split = leave_one_out(load_dataset(dataset))
    params, tcfg = resolve("sasrec", SASRec.config_cls, split.dataset.name, {"max_epochs": epochs})
    sasrec = SASRec(params=params.model_dump(), train=tcfg.model_dump())
    with tempfile.TemporaryDirectory() as tmp:
        sasrec.fit(split, run_dir=os.environ.get("PADREC_DEMO_RUN", tmp))
    evaluator = Evaluator(split, Protocol())
    for model in (Pop().fit(split), sasrec):
        res = evaluator.run(model, stage="test")
        print(res.table())
        print()


if __name__ == "__main__":
    main()
