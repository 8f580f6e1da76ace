"""PAD's stages as recommenders: ``pad-align`` (stage 2 tower), ``pad-text`` (optional text-only
pre-training of the third expert) and ``pad`` (stage 3 triple experts).

Both wrap a trained backbone (any :class:`SequentialRecommender`) and a fixed text table, train with
the shared Lightning loop, and save/load like every other model (state dict + JSON config; the text
table and popularity bins are buffers in the state dict, so a run directory is self-contained).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from padrec.data.split import Split
from padrec.models.base import Recommender, evaluating, get_model_class, register
from padrec.models.losses import logits_loss, rec_loss
from padrec.models.sequential import SeqNet, SequentialRecommender, query_seqs
from padrec.pad.losses import DEFAULT_ALPHAS, Kernel, alignment_loss
from padrec.pad.model import ALL_EXPERTS, EXPERTS, TEXT_SIDE, AlignedNet, CollabNet, PADNet, SimilarityNet, TextNet
from padrec.train.config import Strict, TrainConfig


class PADConfig(Strict):
    lam: float = 0.2
    alignment: Literal["mmd", "infonce"] = "mmd"
    kernel: Kernel = "gaussian"
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    temperature: float = 0.1
    adapter_layers: int = 2
    adapter_dropout: float = 0.2
    freeze_copy: bool = False
    experts: tuple[str, ...] = EXPERTS
    learn_gates: bool = True
    n_bins: int = 10
    mmd_max_items: int = 512
    expert_loss: float = 0.0
    # "fresh": the text expert starts untrained in stage 3 (reference). "pretrain": it is first trained
    # alone as a text-only recommender (stage ``text-expert``), like the other two experts are.
    text_init: Literal["fresh", "pretrain"] = "fresh"
    # initial scale of the optional ``similarity`` expert: score = scale · cos(last item's text, item's text)
    similarity_scale: float = 10.0
    # experts kept as loaded in stage 3 (no gradient, no dropout); the paper fine-tunes all of them
    freeze: tuple[str, ...] = ()
    # learning rate of the gates alone (default: train.lr); with frozen experts the gates are nearly
    # all that learns, and at the experts' lr they move only a few hundredths per epoch
    gate_lr: float | None = Field(default=None, gt=0)
    # after stage 3, choose each gate bin's share of the mixture (the rest: the collaborative expert alone) on a
    # seeded half of the validation users, keeping their cold-item NDCG@10 at least the collaborative expert's
    # (padrec.pad.calibrate; not in the paper)
    calibrate: bool = False
    # calibration for cold items: the share of the best overall NDCG@10 (on the calibration users) it may give up
    # for them, moving all bins at once, up to the text-side expert alone (padrec.pad.calibrate.search_budget);
    # 0: the rule above
    calibrate_budget: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_experts(self) -> PADConfig:
        """Checked when the config is built, so a typo fails before hours of pre-training, not after."""
        unknown = set(self.experts) - set(ALL_EXPERTS)
        if unknown or not self.experts or len(set(self.experts)) != len(self.experts):
            raise ValueError(f"experts must be distinct names from {list(ALL_EXPERTS)}, got {list(self.experts)}")
        if not set(self.freeze) <= set(self.experts):
            raise ValueError(f"freeze={list(self.freeze)} names experts that are not in experts={list(self.experts)}")
        if self.calibrate and "collab" not in self.experts:
            raise ValueError(f"calibrate=true falls back to the collab expert, which is not in {list(self.experts)}")
        if self.calibrate_budget and not (self.calibrate and set(TEXT_SIDE) & set(self.experts)):
            raise ValueError(
                "calibrate_budget > 0 needs calibrate=true and a similarity or text expert to move towards, got "
                f"calibrate={self.calibrate}, experts={list(self.experts)}"
            )
        return self


def make_experts(
    p: PADConfig, backbone: nn.Module, text: torch.Tensor, trained: dict[str, nn.Module] | None = None
) -> dict[str, nn.Module]:
    """Stage-3 experts by name: a trained tower in ``trained`` is copied, the others built around the backbone.

    Loading a saved PAD builds every expert fresh (``trained`` empty) and then loads the weights.
    """
    trained = trained or {}
    fresh = {
        "collab": lambda: CollabNet(backbone),
        "aligned": lambda: AlignedNet(backbone, text, p.adapter_layers, p.adapter_dropout),
        "text": lambda: TextNet(backbone, text, p.adapter_layers, p.adapter_dropout),
        "similarity": lambda: SimilarityNet(backbone, text, p.similarity_scale),
    }
    return {k: _copy_module(trained[k]) if k in trained else fresh[k]() for k in p.experts}


def bins_for_gates(popularity_bins: np.ndarray, n_bins: int) -> torch.Tensor:
    """Split bins 1..n (and unseen = n+1) -> gate columns 0..n-1; unseen items share the coldest."""
    b = np.clip(np.asarray(popularity_bins), 1, n_bins) - 1
    return torch.as_tensor(b, dtype=torch.long)


class _PADStage(Recommender):
    """Shared plumbing: backbone description, query building, state (de)serialisation."""

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        train: dict[str, Any] | None = None,
        backbone: str = "sasrec",
        backbone_params: dict[str, Any] | None = None,
        text_dim: int = 0,
        encoder: str = "minilm",
    ) -> None:
        p = PADConfig(**(params or {}))
        t = TrainConfig(**(train or {}))
        bcls = get_model_class(backbone)
        if not issubclass(bcls, SequentialRecommender):
            raise ValueError(f"PAD needs a sequential backbone (sasrec, gru4rec, bert4rec, caser), got {backbone!r}")
        bp = bcls.config_cls(**(backbone_params or {}))
        super().__init__(
            params=p.model_dump(),
            train=t.model_dump(),
            backbone=backbone,
            backbone_params=bp.model_dump(),
            text_dim=text_dim,
            encoder=encoder,
        )
        self.params, self.train_cfg, self.backbone_params = p, t, bp
        self.net: Any = None

    @property
    def max_len(self) -> int:
        return self.backbone_params.max_len

    @property
    def mask_prob(self) -> float:
        return getattr(self.backbone_params, "mask_prob", 0.2)

    def _template_backbone(self) -> SeqNet:
        return SeqNet(self.config["backbone"], self.n_items, self.backbone_params)

    def _template_text(self) -> torch.Tensor:
        """Zero text table of the saved shape: loading fills it from the state dict."""
        return torch.zeros(self.n_items + 1, self.config["text_dim"])

    def _describe(self, backbone: SequentialRecommender, text: np.ndarray) -> None:
        if backbone.name != self.config["backbone"]:
            raise ValueError(f"backbone is {backbone.name!r} but the config says {self.config['backbone']!r}")
        self.backbone_params = backbone.params
        self.config["backbone_params"] = backbone.params.model_dump()
        self.config["text_dim"] = int(text.shape[1])
        if text.shape[0] != self.n_items + 1:
            raise ValueError(f"text table has {text.shape[0]} rows, expected n_items + 1 = {self.n_items + 1}")
        if not np.isfinite(text).all():
            raise ValueError("text table has NaN or inf values")

    def train_loader(self, split: Split) -> Any:
        from padrec.train.trainer import sequence_loader

        return sequence_loader(self, split)

    def query(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return query_seqs(histories, self.max_len, self.net.bidirectional, self.net.mask_id)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

    def _fit(self, split: Split, run_dir: Any, resume: bool) -> None:
        from padrec.train.trainer import train

        with warnings.catch_warnings():
            if self.params.freeze:  # frozen experts stay in eval mode on purpose
                warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")
            train(self, split, run_dir=run_dir, resume=resume)


class _Tower(_PADStage):
    """A single (item table, encoder) tower over the text buffer, trained with the recommendation loss."""

    def fit(
        self,
        split: Split,
        backbone: SequentialRecommender,
        text: np.ndarray,
        run_dir: Any = None,
        resume: bool = False,
    ) -> _Tower:
        self._remember_items(split)
        self._describe(backbone, text)
        torch.manual_seed(self.train_cfg.seed)
        self._build(backbone.net, torch.as_tensor(text))
        self._fit(split, run_dir, resume)
        return self

    def _build(self, backbone: SeqNet | None = None, text: torch.Tensor | None = None) -> None:
        """Build from a trained backbone and text table (fit), or from templates (load)."""
        backbone = backbone or self._template_backbone()
        self.net = self._make_net(backbone, text if text is not None else self._template_text())

    def _make_net(self, backbone: SeqNet, text: torch.Tensor) -> nn.Module:
        raise NotImplementedError

    def _rec_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        inp, tgt = batch
        table = self.net.all_vectors()
        hidden = self.net.encode(inp, table)
        keep = tgt > 0
        cfg = self.train_cfg
        loss = rec_loss(hidden[keep], tgt[keep], table[: self.net.n_items + 1], cfg.loss, cfg.n_negatives)
        return loss, int(keep.sum())

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return self._rec_loss(batch)

    @torch.inference_mode()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        net = self.net
        with evaluating(net):
            table = net.all_vectors()
            users = net.encode(self.query(histories), table, last=True)
        return (users @ table[: net.n_items + 1].T).float()


@register("pad-align")
class PADAligned(_Tower):
    """Stage 2: the aligned tower trained with recommendation loss + λ·alignment(g(t), e)."""

    def _make_net(self, backbone: SeqNet, text: torch.Tensor) -> nn.Module:
        p = self.params
        return AlignedNet(backbone, text, p.adapter_layers, p.adapter_dropout, p.freeze_copy)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        loss, n = self._rec_loss(batch)
        inp, tgt = batch
        net: AlignedNet = self.net
        p = self.params
        if p.lam > 0:
            items = torch.unique(torch.cat([inp.flatten(), tgt.flatten()]))
            items = items[(items > 0) & (items <= net.n_items)]  # never padding or the mask token
            if len(items) > p.mmd_max_items:
                items = items[torch.randperm(len(items))[: p.mmd_max_items]]
            if len(items) >= 2:
                g = net.adapter(net.text[items])
                e = net.items(items)
                loss = loss + p.lam * alignment_loss(g, e, p.alignment, p.kernel, p.alphas, p.temperature)
        return loss, n

    def text_space(self) -> np.ndarray:
        """g(t) for every item: the adapted text vectors compared with the id table in the analysis."""
        with torch.inference_mode(), evaluating(self.net):
            return self.net.adapter(self.net.text[: self.n_items + 1]).numpy()


@register("pad-text")
class PADText(_Tower):
    """Optional stage before 3: the text-only expert (adapter + fresh encoder) trained alone.

    A fresh text expert trained only through the gated mixture learns a residual on top of the
    pre-trained collaborative expert and is poor on its own, exactly where its gate is large (cold
    items). Pre-training it alone gives it the same head start the other two experts have.
    """

    def _make_net(self, backbone: SeqNet, text: torch.Tensor) -> nn.Module:
        return TextNet(backbone, text, self.params.adapter_layers, self.params.adapter_dropout)


@register("pad")
class PAD(_PADStage):
    """Stage 3: collaborative, aligned and text-only experts mixed by item-popularity gates."""

    def _build(self, experts: dict[str, nn.Module] | None = None, bins: torch.Tensor | None = None) -> None:
        p = self.params
        if experts is None:
            experts = make_experts(p, self._template_backbone(), self._template_text())
        bins = bins if bins is not None else torch.zeros(self.n_items + 1, dtype=torch.long)
        self.net = PADNet(experts, bins, p.n_bins, p.learn_gates, p.freeze)

    def fit(
        self,
        split: Split,
        backbone: SequentialRecommender,
        text: np.ndarray,
        aligned: PADAligned | None = None,
        run_dir: Any = None,
        resume: bool = False,
        text_expert: PADText | None = None,
    ) -> PAD:
        self._remember_items(split)
        self._describe(backbone, text)
        p = self.params
        unknown = set(p.experts) - set(ALL_EXPERTS)
        if unknown or not p.experts or len(set(p.experts)) != len(p.experts):
            raise ValueError(f"experts must be distinct names from {ALL_EXPERTS}, got {list(p.experts)}")
        if not set(p.freeze) <= set(p.experts):
            raise ValueError(f"freeze={list(p.freeze)} names experts that are not in experts={list(p.experts)}")
        if "aligned" in p.experts and aligned is None:
            raise ValueError("the aligned expert needs the stage-2 model (pad-align)")
        if "text" in p.experts and p.text_init == "pretrain" and text_expert is None:
            raise ValueError("text_init='pretrain' needs the pre-trained text expert (pad-text)")
        torch.manual_seed(self.train_cfg.seed)
        trained = {"aligned": aligned.net} if aligned is not None else {}
        if p.text_init == "pretrain" and text_expert is not None:
            trained["text"] = text_expert.net
        experts = make_experts(p, backbone.net, torch.as_tensor(text), trained)
        self._build(experts, bins_for_gates(split.popularity_bins, p.n_bins))
        self._fit(split, run_dir, resume)
        return self

    def param_groups(self) -> list[dict[str, Any]]:
        """Gates get no weight decay: decay would pull every expert towards an equal share."""
        others = [p for n, p in self.net.named_parameters() if n != "gates" and p.requires_grad]
        gates: dict[str, Any] = {"params": [self.net.gates], "weight_decay": 0.0}
        if self.params.gate_lr is not None:
            gates["lr"] = self.params.gate_lr
        return [{"params": others}, gates]

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        inp, tgt = batch
        net: PADNet = self.net
        tables = net.tables()
        keep = tgt > 0
        hidden = [h[keep] for h in net.hidden(inp, tables)]
        parts = net.expert_logits(hidden, tables)
        target = tgt[keep]
        cfg = self.train_cfg
        loss = logits_loss(net.mix(parts), target, cfg.loss, cfg.n_negatives)
        if self.params.expert_loss > 0:
            # each expert must also rank well on its own: otherwise a fresh expert (text) only learns a
            # residual on top of the pre-trained one and is useless exactly where its gate is large
            loss = loss + self.params.expert_loss * sum(
                logits_loss(p, target, cfg.loss, cfg.n_negatives) for p in parts
            )
        return loss, int(keep.sum())

    can_add_items = True

    @torch.no_grad()
    def add_item_vectors(self, ids: Sequence[str], vectors: np.ndarray, titles: Sequence[str] | None = None) -> int:
        """Add (or update) items from their text vectors alone; returns how many were new.

        New items have no id embedding (zero), so their collaborative score is 0 and they sit in the
        coldest popularity bin, where the gates favour the text and aligned experts. No retraining.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.config["text_dim"]):
            raise ValueError(
                f"expected text vectors of shape ({len(ids)}, {self.config['text_dim']}), got {vectors.shape}"
            )
        if not np.isfinite(vectors).all():
            raise ValueError("text vectors contain NaN or inf")
        titles = list(titles) if titles is not None else [""] * len(ids)
        index = {str(e): i for i, e in enumerate(self.item_ids) if i}
        new = [k for k, e in enumerate(ids) if str(e) not in index]
        for k, e in enumerate(ids):  # updates: replace the text of known items
            if str(e) in index:
                self._set_text(index[str(e)], torch.from_numpy(vectors[k]))
                if self.titles is not None and titles[k]:
                    self.titles[index[str(e)]] = titles[k]
        if not new:
            return 0
        self.net.invalidate()
        add = torch.from_numpy(vectors[new])
        at = self.net.n_items + 1  # new rows follow the last item, before BERT4Rec's mask row if there is one
        for expert in self.net.experts.values():
            if hasattr(expert, "items"):
                emb = expert.items.emb
                w = emb.weight.data
                grown = torch.cat([w[:at], w.new_zeros(len(new), w.size(1)), w[at:]])
                emb.weight = nn.Parameter(grown, requires_grad=emb.weight.requires_grad)
                emb.num_embeddings = grown.size(0)
            if hasattr(expert, "text"):
                expert.text = torch.cat([expert.text[:at], add.to(expert.text.dtype), expert.text[at:]])
            expert.n_items += len(new)
            if expert.bidirectional:
                expert.mask_id += len(new)
        coldest = torch.full((len(new),), self.params.n_bins - 1, dtype=torch.long)
        self.net.item_bins = torch.cat([self.net.item_bins, coldest])
        self.net.item_blend = torch.cat([self.net.item_blend, torch.ones(len(new))])  # new items: the full mixture
        self.net.n_items += len(new)
        if self.net.bidirectional:
            self.net.mask_id += len(new)
        self.item_ids = np.asarray([*self.item_ids, *(str(ids[k]) for k in new)], dtype=object)
        self.titles = [*(self.titles or [""] * (len(self.item_ids) - len(new))), *(titles[k] for k in new)]
        return len(new)

    def add_items(self, items: Sequence[dict[str, Any]]) -> int:
        """Add or update items from ``{"id", "text", "title"?}`` dicts, embedding ``text`` with the run's encoder."""
        from padrec.text import embed_texts

        if not items:
            return 0
        missing = [i for i, it in enumerate(items) if not str(it.get("id", "")).strip()]
        if missing:
            raise ValueError(f"items at positions {missing} have no 'id'")
        texts = [str(it.get("text") or it.get("title") or f"item {it['id']}") for it in items]
        vectors = embed_texts(texts, self.config.get("encoder", "minilm"))
        titles = [str(it.get("title") or it.get("text") or "") for it in items]
        return self.add_item_vectors([str(it["id"]) for it in items], vectors, titles)

    def _set_text(self, row: int, vec: torch.Tensor) -> None:
        self.net.invalidate()
        for expert in self.net.experts.values():
            if hasattr(expert, "text"):
                expert.text[row] = vec.to(expert.text.dtype)

    @torch.inference_mode()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        with evaluating(self.net):
            out = self.net.score(self.query(histories))
        return out.float()


def _copy_module(m: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(m)
