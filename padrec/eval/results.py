"""One evaluation's numbers, with the protocol name always attached, and their printed forms."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from padrec.eval.report import finite, git_commit


@dataclass
class Results:
    """Metrics of one (model, dataset, protocol, stage), overall and per group.

    ``groups`` maps a group name (``bin1``..``bin10``, ``unseen``, ``warm``, ``cold``,
    ``len1-5``...) to the same metrics as ``overall`` plus ``users`` (how many users the group
    holds). Empty groups are left out.
    """

    protocol: str
    dataset: str
    model: str
    stage: str
    n_users: int
    overall: dict[str, float]
    groups: dict[str, dict[str, float]] = field(default_factory=dict)

    # -- printed forms ------------------------------------------------------------------
    def _columns(self, metrics: Sequence[str] | None) -> list[str]:
        if metrics is not None:
            return list(metrics)
        # Recall@k equals HR@k with one target per user: printing both only adds noise
        return [k for k in self.overall if not k.startswith("Recall@")]

    def _rows(self, metrics: Sequence[str] | None) -> tuple[list[str], list[list[str]]]:
        cols = self._columns(metrics)
        rows = [["overall", str(self.n_users), *(_fmt(self.overall.get(c)) for c in cols)]]
        for name, m in self.groups.items():
            rows.append([name, str(int(m.get("users", 0))), *(_fmt(m.get(c)) for c in cols)])
        return ["group", "users", *cols], rows

    def group(self, name: str) -> dict[str, float]:
        """The metrics of one report row: ``"overall"`` or a group name (empty when the group has no users)."""
        return self.overall if name == "overall" else self.groups.get(name, {})

    def __str__(self) -> str:  # print(results) shows the table
        return self.table()

    def title(self) -> str:
        return f"{self.model} on {self.dataset} ({self.stage}), protocol {self.protocol}"

    def table(self, metrics: Sequence[str] | None = None) -> str:
        """Fixed-width text table: overall first, then each group; columns users + metrics."""
        head, rows = self._rows(metrics)
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = [f"{{:<{widths[0]}}}", *(f"{{:>{w}}}" for w in widths[1:])]

        def line(cells: list[str]) -> str:
            return "  ".join(f.format(c) for f, c in zip(fmt, cells, strict=True)).rstrip()

        rule = "-" * len(line(head))
        return "\n".join([self.title(), rule, line(head), rule, *(line(r) for r in rows)])

    def to_markdown(self, metrics: Sequence[str] | None = None) -> str:
        head, rows = self._rows(metrics)
        out = [f"**{self.title()}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out) + "\n"

    # -- machine-readable forms -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return finite(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Results:
        nan = float("nan")
        return cls(
            protocol=d["protocol"],
            dataset=d["dataset"],
            model=d["model"],
            stage=d["stage"],
            n_users=int(d["n_users"]),
            overall={k: nan if v is None else float(v) for k, v in d["overall"].items()},
            groups={
                g: {k: nan if v is None else (int(v) if k == "users" else float(v)) for k, v in m.items()}
                for g, m in d.get("groups", {}).items()
            },
        )

    @classmethod
    def from_json(cls, text: str) -> Results:
        return cls.from_dict(json.loads(text))

    def record(
        self,
        task: str = "accuracy",
        device: str = "cpu",
        seeds: Sequence[int] | None = None,
        note: str = "",
        groups: bool = True,
    ) -> dict[str, Any]:
        """A MISSION.md §5 benchmark record (``metrics`` also carries ``users``)."""
        rec: dict[str, Any] = {
            "task": task,
            "dataset": self.dataset,
            "model": self.model,
            "protocol": self.protocol,
            "stage": self.stage,
            "metrics": {**self.overall, "users": self.n_users},
        }
        if groups and self.groups:
            rec["groups"] = {g: dict(m) for g, m in self.groups.items()}
        rec.update(
            device=device,
            seeds=list(seeds) if seeds is not None else [],
            commit=git_commit(),
            date=time.strftime("%Y-%m-%d"),
            note=note,
        )
        return finite(rec)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.4f}"
    return str(v)
