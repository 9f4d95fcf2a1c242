"""The trainer's dev evaluation: the embedding rule of :mod:`speakerid.inference` on the dev trials.

The dev utterances are embedded exactly as ``speakerid extract`` embeds them (eval-mode
fbank, the experiment's segment policy, :func:`speakerid.inference.embed_waves`), and the
trials are cosine-scored (Dehak et al. 2011) and measured by the scoring module, so the dev
EER in ``train.log``/``dev_eval.json`` equals ``speakerid eval`` on the recipe's dev scores.
Each rank embeds a strided share of the utterances; the embeddings are gathered.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from speakerid.config import TrainConfig
from speakerid.data.training import TrainError
from speakerid.distributed import DistInfo
from speakerid.inference import SegmentPolicy, build_frontend, mean_embeddings, segment_batches


class DevSet:
    """Dev waveforms (read once) and their labelled trials; :meth:`evaluate` gives EER and minDCF."""

    def __init__(self, cfg: TrainConfig, info: DistInfo) -> None:
        from speakerid.audio import load_audio, require_min_length
        from speakerid.data.datadir import read_data_dir
        from speakerid.scoring.embeddings import missing_ids
        from speakerid.scoring.trials import read_trial_list

        data = read_data_dir(cfg.dev_data)
        self.trials = read_trial_list(cfg.dev_trials)
        if not len(self.trials):
            raise TrainError(f"{cfg.dev_trials}: no trials")
        if self.trials.labels is None:
            raise TrainError(f"{cfg.dev_trials}: trials without a target/nontarget label")
        needed = np.union1d(self.trials.enroll, self.trials.test)
        missing = missing_ids(list(data.wav), needed).tolist()
        if missing:
            raise TrainError(f"{cfg.dev_trials}: {len(missing)} trial id(s) not in {cfg.dev_data}/wav.scp, e.g. {missing[:3]}")
        self.utts: list[str] = needed.tolist()
        self.info = info
        self.sample_rate = cfg.features.sample_rate
        self.policy = SegmentPolicy.from_config(cfg)
        self.mine = self.utts[info.rank :: info.world_size]
        waves = [require_min_length(load_audio(data.wav[u], self.sample_rate)[0], self.sample_rate, data.wav[u]) for u in self.mine]
        # The batches of speakerid.inference.embed_waves, their front end computed once:
        # extractor(x) == encoder(frontend(x)), so the embeddings are those of `extract`.
        frontend = build_frontend(cfg.features)
        with torch.no_grad():
            self.batches = [
                (idx, frontend(x)) for idx, x in segment_batches(waves, frontend.window, frontend.shift, self.sample_rate, self.policy)
            ]

    @torch.no_grad()
    def embeddings(self, encoder: nn.Module) -> np.ndarray:
        """Embeddings ``[N, D]`` of all dev utterances (``self.utts`` order); the encoder is put back in its mode."""
        was_training = encoder.training
        encoder.eval()
        try:
            dim = int(encoder(self.batches[0][1][:1].to(self.info.device)).shape[-1]) if self.batches else 0
            emb = mean_embeddings(encoder, self.batches, len(self.mine), dim, self.info.device)
            local = dict(zip(self.mine, emb))
        finally:
            encoder.train(was_training)
        if self.info.distributed:
            parts: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(parts, local)
            for p in parts:
                local.update(p)
        return torch.stack([local[u] for u in self.utts]).numpy()

    def evaluate(self, encoder: nn.Module) -> dict[str, float]:
        """EER, its threshold and minDCF(0.01) of ``encoder`` on the dev trials."""
        from speakerid.scoring.trial_scores import EmbeddingTable, score_trials
        from speakerid.scoring.metrics import compute_metrics

        table = EmbeddingTable(np.asarray(self.utts), self.embeddings(encoder), "dev embeddings")
        scores = score_trials(self.trials.enroll, self.trials.test, table)  # length-normalises
        m = compute_metrics(scores, self.trials.labels, p_targets=(0.01,))
        return {"eer": float(m.eer), "threshold": float(m.eer_threshold), "min_dcf_0.01": float(m.min_dcf[0.01][0])}
