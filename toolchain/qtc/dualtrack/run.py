"""The dual track: PTQ and QAT from one float checkpoint, scored alike, one winner under the budgets.

:func:`run_dualtrack` (``qtc dualtrack CONFIG``):

1. loads the float checkpoint(s) and lowers them once to qtc's canonical float
   IR (channels-last): every track starts from this same graph;
2. writes the shared quant dataset and the frozen-eval description
   (``quant_dataset/``, see :mod:`.workload`) and ``eval_float.json``;
3. PTQ track: :func:`qtc.passes.quantize.quantize` with each activation
   calibration method of ``ptq.methods`` and each weight-range method of
   ``ptq.weight_methods`` (then AdaRound on each weight method's best), all scored on the
   eval set; the best becomes the ``ptq`` candidate;
4. QAT track: :func:`qtc.qat.train_qat` on the same float graph and quant
   dataset (distilling from the float model), :func:`qtc.qat.qat_to_ir` back
   to the integer IR: the ``qat`` candidate;
5. Keras QAT (``qat_keras``, optional): tfmot on the tf_keras twin, TF's
   converter, imported back (:mod:`.keras_qat`);
6. for every candidate: ``eval_<variant>.json`` (task metrics from qtc's integer
   interpreter + per-sub-model output error from :func:`qtc.eval.compare.compare`),
   the .qir / .tflite / C folder of every sub-model, and the latency from the
   bench loop (for the Deep Sets pair: 8 × peer_encoder + pool + policy_head);
7. :func:`.decide.decide` picks the winner; :mod:`.report` writes
   ``dualtrack.json``, ``dualtrack.md`` and ``accuracy_vs_size.png``.

Everything is written under ``output`` (temp file + rename); the same config
and seed give the same files.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable

import click
import numpy as np

from .. import __version__
from ..errors import QtcError
from . import artifacts
from .config import DualTrackConfig
from .decide import decide
from .report import write_report
from .workload import COMPARE_SAMPLES, Workload, graph_fn

SCHEMA = "qtc.dualtrack/1"
MODE_LABEL = {0: "floating point, no quantization", 1: "generic int8 (TFLite numerics)",
              2: "TI NPU style (power-of-two, symmetric)"}
MAX_PEERS = 8
LAYER_SAMPLES = 16


class _Run:
    def __init__(self, cfg: DualTrackConfig, echo: Callable[[str], None]):
        self.cfg = cfg
        self.echo = echo
        self.out = Path(cfg.output)
        self.wl: Workload | None = None
        self.float_metrics: dict = {}
        self.pool: dict | None = None

    # ------------------------------------------------------------ helpers
    def step(self, msg: str) -> float:
        self.echo(f"[dualtrack] {msg}")
        return time.perf_counter()

    def _bench_on(self) -> bool:
        b = self.cfg.bench.enabled
        return b == "true" or (b == "auto" and "latency_ms" in self.cfg.budgets)

    def score(self, graphs: list, quantized: bool, keras_layout: bool = False) -> dict:
        return self.wl.metrics([graph_fn(g, quantized) for g in graphs], keras_layout=keras_layout)

    def _says(self, m: dict) -> str:
        text = f"{self.cfg.metric} {m[self.cfg.metric]:.4f}"
        return text if self.cfg.metric == "accuracy" else f"{text}, accuracy {m['accuracy']:.4f}"

    @staticmethod
    def _small(m: dict) -> dict:
        return {k: v for k, v in m.items() if k != "confusion"}

    # ------------------------------------------------------------ float
    def run_float(self) -> dict:
        from ..atomic import save_json
        from ..eval.compare import evaluate_float
        from ..eval.report import clean_json

        wl = self.wl
        t0 = self.step("float baseline on the frozen eval set")
        self.float_metrics = self.score([n.graph for n in wl.nets], quantized=False)
        subs = {}
        for net in wl.nets:
            labels = None if wl.pair else wl.labels[:COMPARE_SAMPLES]
            d = evaluate_float(net.graph, {net.graph.inputs[0]: net.compare_x}, labels,
                               model_name=net.name, data_name="eval")
            subs[net.name] = d
        doc = {"schema": "qtc.dualtrack.eval/1", "variant": "float", "track": "float", "qtc_version": __version__,
               "target": self.cfg.target, "eval": wl.eval_info(),
               "metric": {"name": self.cfg.metric, "value": self.float_metrics.get(self.cfg.metric)},
               "metrics": self.float_metrics, "sub_models": subs}
        save_json(self.out / "eval_float.json", clean_json(doc))
        self.echo(f"           {self._says(self.float_metrics)} ({time.perf_counter() - t0:.1f} s)")
        return {"metrics": self.float_metrics, "eval_json": "eval_float.json",
                "sub_models": {n.name: {"size_bytes": artifacts.float_size(n.graph), "size_basis": "float32_weights"}
                               for n in wl.nets}}

    # ------------------------------------------------------------ PTQ
    def _quantize_all(self, method: str, weight_method: str, adaround) -> list:
        from ..passes.quantize import QuantizeWarning, quantize

        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", QuantizeWarning)
            for k, net in enumerate(self.wl.nets):
                # the first sub-model reads the user's features: per-feature input params where its input feeds
                # only FullyConnected layers; a later one (the Deep Sets head) reads the int8 pool's output
                pfi = "auto" if k == 0 else False
                out.append(quantize(net.graph, {net.graph.inputs[0]: net.calib}, target=self.cfg.target,
                                    method=method, weight_method=weight_method, wbits=self.cfg.wbits,
                                    abits=self.cfg.abits, seed=self.cfg.seed, progress=False, adaround=adaround,
                                    per_feature_input=pfi))
        return out

    def _better(self, a: dict, b: dict | None) -> bool:
        if b is None:
            return True
        key = lambda m: (m[self.cfg.metric], m["accuracy"])  # noqa: E731
        return key(a) > key(b)

    def run_ptq(self) -> tuple[dict, list[dict]]:
        """Every (activation method, weight method) pair, then AdaRound on each weight method's best
        activation method; the best of all is the candidate."""
        cfg = self.cfg
        t0 = self.step(f"PTQ track: activations {', '.join(cfg.ptq_methods)} x weights "
                       f"{', '.join(cfg.weight_methods)}" + (" + AdaRound" if cfg.adaround else ""))
        search, best = [], None
        best_per_w: dict[str, tuple] = {}
        for method in cfg.ptq_methods:
            for wmethod in cfg.weight_methods:
                graphs = self._quantize_all(method, wmethod, False)
                m = self.score(graphs, quantized=True)
                search.append({"method": method, "weight_method": wmethod, "adaround": False,
                               "metrics": self._small(m)})
                self.echo(f"           {method:<10} weights {wmethod:<6} {self._says(m)}")
                if best is None or self._better(m, best[3]):
                    best = (method, wmethod, graphs, m, False)
                if wmethod not in best_per_w or self._better(m, best_per_w[wmethod][1]):
                    best_per_w[wmethod] = (method, m)
        if cfg.adaround:  # AdaRound starts from the weight scales: try it on each weight method's best
            for wmethod in cfg.weight_methods:
                method = best_per_w[wmethod][0]
                graphs = self._quantize_all(method, wmethod, {"iters": cfg.adaround_iters, "seed": cfg.seed})
                m = self.score(graphs, quantized=True)
                search.append({"method": method, "weight_method": wmethod, "adaround": True,
                               "metrics": self._small(m)})
                self.echo(f"           {method:<10} weights {wmethod:<6} + AdaRound {self._says(m)}")
                if self._better(m, best[3]):
                    best = (method, wmethod, graphs, m, True)
        method, wmethod, graphs, metrics, ada = best
        setting = (f"PTQ {method}" + (f", {wmethod} weights" if wmethod != "minmax" else "")
                   + (" + AdaRound" if ada else "") + f", W{cfg.wbits}A{cfg.abits}")
        self.echo(f"           best: {setting} ({time.perf_counter() - t0:.1f} s)")
        cand = self.candidate("ptq", "ptq", setting, graphs, metrics)
        return cand, search

    # ------------------------------------------------------------ QAT (torch)
    def run_qat(self) -> dict:
        """torch QAT of every sub-model from its float graph, on the shared quant dataset (or, with
        ``qat.train_data: training``, on the example model's labelled training split; the quant dataset
        still initialises the step sizes).

        With labels (the policy head's expert actions) the loss is
        ``(1-alpha)·CE + alpha·KL(teacher)``; without (the encoder, one-model
        configs) it is distillation only: KL on logits for a classifier, MSE on
        embeddings for the encoder.  Checkpoints go to ``qat/checkpoints/`` when
        ``qat.resume`` is set (they hold wall times), else to a temp folder.
        """
        import tempfile

        from ..qat import accuracy_eval, qat_to_ir, train_qat

        cfg, wl = self.cfg, self.wl
        t0 = self.step(f"QAT track (torch): {cfg.qat.epochs} epoch(s), lr {cfg.qat.lr:g}, quant_lr "
                       f"{cfg.qat.quant_lr:g}, distill_alpha {cfg.qat.distill_alpha:g}, on the "
                       f"{cfg.qat.train_data} data")
        graphs, notes, histories = [], [], {}
        with tempfile.TemporaryDirectory(prefix="qtc-qat-") as tmp:
            for k, net in enumerate(wl.nets):
                training = net.train_x is not None      # qat.train_data: training
                xs, labels = (net.train_x, net.train_y) if training else (net.calib, net.calib_labels)
                classifier = k == len(wl.nets) - 1      # the head / the one model: logits
                if wl.pair:
                    eval_fn = accuracy_eval(net.compare_x, wl.labels[:len(net.compare_x)]) if classifier else None
                else:
                    eval_fn = accuracy_eval(wl.eval_x[:COMPARE_SAMPLES], wl.labels[:COMPARE_SAMPLES])
                root = self.out / "qat" / "checkpoints" if cfg.qat.resume else Path(tmp)
                with warnings.catch_warnings():  # train.py's float() of a loss that requires grad
                    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
                    model, history = train_qat(
                        net.graph, (xs, labels), eval_fn, target=cfg.target, wbits=cfg.wbits,
                        abits=cfg.abits, epochs=cfg.qat.epochs, lr=cfg.qat.lr, quant_lr=cfg.qat.quant_lr,
                        distill_alpha=cfg.qat.distill_alpha, calib=net.calib if training else None,
                        checkpoint_dir=str(root / net.name), resume=cfg.qat.resume, seed=cfg.seed,
                        batch_size=cfg.qat.batch_size, distill="kl" if classifier else "mse",
                        per_feature_input=cfg.qat.per_feature_input, progress=False)
                graphs.append(qat_to_ir(model, target=cfg.target))
                histories[net.name] = [{k2: v for k2, v in h.items() if k2 != "seconds"} for h in history]
                how = (f"the labelled training split ({len(xs)} samples, models.{net.name}.make_data): "
                       f"(1-alpha)·cross-entropy + alpha·KL, alpha {cfg.qat.distill_alpha:g}" if training else
                       "cross-entropy on the expert labels + KL distillation" if labels is not None else
                       "distillation only (the quant dataset has no labels): "
                       + ("KL on logits" if classifier else "MSE on embeddings"))
                notes.append(f"{net.name}: {how}")
                last = history[-1]
                self.echo(f"           {net.name}: loss {last.get('loss', float('nan')):.4g}"
                          + (f", fake-quant accuracy {last['metric']:.4f}" if "metric" in last else ""))
        metrics = self.score(graphs, quantized=True)
        self.echo(f"           {self._says(metrics)} ({time.perf_counter() - t0:.1f} s)")
        setting = f"QAT {cfg.qat.epochs} ep, W{cfg.wbits}A{cfg.abits}"
        cand = self.candidate("qat", "qat", setting, graphs, metrics, notes=notes)
        cand["history"] = histories
        return cand

    # ------------------------------------------------------------ QAT (Keras / tfmot)
    def run_qat_keras(self) -> dict:
        from .keras_qat import keras_qat

        cfg, wl = self.cfg, self.wl
        t0 = self.step(f"QAT track (Keras, tfmot): {cfg.keras_qat.epochs} epoch(s), lr {cfg.keras_qat.lr:g}")
        folder = self.out / "qat_keras"
        graphs, floats, tfls, notes = [], [], [], []
        for net in wl.nets:
            if net.spec.keras is None:
                raise QtcError(f"{net.name} has no tf_keras twin", hint="drop qat_keras from tracks")
            res = keras_qat(net.spec.keras, net.calib_keras, folder / f"{net.name}_qat_keras_int8.tflite",
                            epochs=cfg.keras_qat.epochs, lr=cfg.keras_qat.lr, batch_size=cfg.keras_qat.batch_size,
                            seed=cfg.seed, name=net.name)
            graphs.append(res.graph)
            floats.append(res.float_graph)
            tfls.append(res.tflite_path)
            notes += [f"{net.name}: {n}" for n in res.notes]
            if res.folded:
                notes.append(f"{net.name}: folded " + ", ".join(res.folded))
        metrics = self.score(graphs, quantized=True, keras_layout=True)
        self.echo(f"           {self._says(metrics)} ({time.perf_counter() - t0:.1f} s)")
        return self.candidate("qat_keras", "qat_keras", f"tfmot QAT {cfg.keras_qat.epochs} ep, W8A8", graphs,
                              metrics, float_graphs=floats, tflite_files=tfls, keras_layout=True, notes=notes)

    # ------------------------------------------------------------ per candidate
    def candidate(self, name: str, track: str, setting: str, graphs: list, metrics: dict, *,
                  float_graphs: list | None = None, tflite_files: list | None = None, keras_layout: bool = False,
                  notes: list[str] | None = None) -> dict:
        from ..atomic import save_json
        from ..eval.compare import compare
        from ..eval.report import clean_json

        cfg, wl = self.cfg, self.wl
        folder = self.out / name
        subs, eval_subs = {}, {}
        for k, (net, g) in enumerate(zip(wl.nets, graphs)):
            fg = float_graphs[k] if float_graphs else net.graph
            x = net.compare_x_keras if keras_layout else net.compare_x
            labels = None if wl.pair else wl.labels[:COMPARE_SAMPLES]
            eval_subs[net.name] = compare(fg, g, {fg.inputs[0]: x}, labels, variant=name,
                                          layer_samples=LAYER_SAMPLES, float_name=net.name,
                                          quant_name=f"{net.name}_{name}", data_name="eval")
            calib = net.calib_keras if keras_layout else net.calib
            subs[net.name] = artifacts.emit(g, folder, net.name, f"{net.name}_{name}", calib,
                                            size_basis=cfg.size_basis,
                                            tflite_file=tflite_files[k] if tflite_files else None)
        fm = self.float_metrics
        doc = {"schema": "qtc.dualtrack.eval/1", "variant": name, "track": track, "setting": setting,
               "qtc_version": __version__, "target": cfg.target, "eval": wl.eval_info(),
               "metric": {"name": cfg.metric, "value": metrics.get(cfg.metric), "float": fm.get(cfg.metric),
                          "delta": metrics.get(cfg.metric) - fm.get(cfg.metric)},
               "metrics": metrics, "float_metrics": fm, "sub_models": eval_subs}
        save_json(self.out / f"eval_{name}.json", clean_json(doc))
        cand = {"name": name, "track": track, "setting": setting, "metrics": self._small(metrics),
                "sub_models": subs, "eval_json": f"eval_{name}.json", "folder": name, "notes": list(notes or [])}
        cand["latency"] = self.latency(cand, folder) if self._bench_on() else None
        return cand

    # ------------------------------------------------------------ latency
    def _pool_bench(self) -> dict:
        """Bench the Deep Sets pooling (int8 mean over 8 encoder outputs) once per run."""
        if self.pool is not None:
            return self.pool
        from ..passes.quantize import QuantizeWarning, quantize

        wl = self.wl
        enc = wl.nets[0]
        qs = wl.quant_scenes
        mask = qs["mask"].astype(bool)
        full = np.zeros(mask.shape + (enc.teacher.shape[-1],), np.float32)
        full[mask] = enc.teacher
        g = artifacts.pool_graph(MAX_PEERS, enc.teacher.shape[-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", QuantizeWarning)
            q = quantize(g, {"x": full}, target=self.cfg.target, abits=self.cfg.abits, progress=False)
        folder = self.out / "pool"
        rec = artifacts.emit(q, folder, "deepsets_pool", "deepsets_pool", full, size_basis="c_weights")
        self.pool = artifacts.bench(folder / rec["c_dir"], folder / "device", runs=self.cfg.bench.runs,
                                    port=self.cfg.bench.port, target=self.cfg.target)
        return self.pool

    def latency(self, cand: dict, folder: Path) -> dict:
        cfg = self.cfg
        per = {}
        try:
            for name, rec in cand["sub_models"].items():
                if rec.get("c_dir") is None:
                    return {"end_to_end_ms": None, "reason": f"no C for {name}: {rec.get('c_error')}"}
                b = artifacts.bench(folder / rec["c_dir"], folder / f"device_{name}", runs=cfg.bench.runs,
                                    port=cfg.bench.port, target=cfg.target)
                rec["bench"] = b
                per[name] = b
            if self.wl.pair:
                enc, head = (self.wl.nets[0].name, self.wl.nets[1].name)
                pool = self._pool_bench()
                us = MAX_PEERS * per[enc]["median_us"] + pool["median_us"] + per[head]["median_us"]
                formula = (f"{MAX_PEERS} × {per[enc]['median_us']:.1f} µs ({enc}) + {pool['median_us']:.1f} µs "
                           f"(pool: int8 mean of {MAX_PEERS}) + {per[head]['median_us']:.1f} µs ({head})")
            else:
                only = next(iter(per.values()))
                us = only["median_us"]
                formula = f"{us:.1f} µs (one inference, median)"
        except QtcError as exc:
            return {"end_to_end_ms": None, "reason": exc.line()}
        first = next(iter(per.values()))
        where_short = {"emulated": "emulated", "board": "board", "host": "host"}.get(first["where"], first["where"])
        return {"end_to_end_ms": us / 1000.0, "formula": formula, "where": first["label"], "where_short": where_short,
                "per_inference_us": {k: v["median_us"] for k, v in per.items()},
                **({"pool_us": self.pool["median_us"]} if self.wl.pair else {})}

    # ------------------------------------------------------------ float-only mode
    def float_candidate(self, fl: dict) -> dict:
        return {"name": "float", "track": "float", "setting": "float32 (quantization: 0)",
                "metrics": self._small(self.float_metrics), "sub_models": fl["sub_models"],
                "eval_json": "eval_float.json", "folder": None,
                "latency": {"end_to_end_ms": None, "reason": "the C back end and the bench run int8 models only"},
                "notes": ["quantization: 0: the float model is the only candidate"]}

    # ------------------------------------------------------------ the whole run
    def run(self) -> dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = self.step(f"{cfg.name}: {'+'.join(s.name for s in cfg.sub_models)} for {cfg.target}, "
                       f"W{cfg.wbits}A{cfg.abits}, tracks {', '.join(cfg.tracks) or 'none (float only)'}")
        self.wl = Workload(cfg)
        qd = self.wl.write_quant_dataset(self.out / "quant_dataset")
        fl = self.run_float()
        candidates, skipped, search = [], [], []
        for track in cfg.tracks:
            try:
                if track == "ptq":
                    cand, search = self.run_ptq()
                elif track == "qat":
                    cand = self.run_qat()
                else:
                    cand = self.run_qat_keras()
            except QtcError as exc:
                self.echo(f"           {track} not run: {exc.line()}")
                skipped.append({"track": track, "reason": exc.line()})
                continue
            candidates.append(cand)
        if not cfg.tracks:
            candidates.append(self.float_candidate(fl))
        decision = decide(candidates, cfg.budgets, cfg.metric, self.float_metrics.get("accuracy"))
        lat_kind = next((c["latency"]["where"] for c in candidates if c.get("latency")
                         and c["latency"].get("where")), None)
        doc = {
            "schema": SCHEMA, "qtc_version": __version__, "name": cfg.name, "target": cfg.target,
            "pair": cfg.pair, "config": cfg.to_json(),
            "quantization": {"mode": cfg.quantization, "mode_label": MODE_LABEL[cfg.quantization],
                             "wbits": cfg.wbits, "abits": cfg.abits, "tensorlab": cfg.tensorlab},
            "budgets": cfg.budgets, "budget_sources": cfg.budget_sources,
            "size_note": ("model_bytes is the .tflite flatbuffer's bytes (weights + graph) per sub-model; a "
                          "sub-model with no .tflite uses the C back end's constant weight bytes (stated per row)"
                          if cfg.size_basis == "tflite" else
                          "model_bytes is the C back end's constant weight bytes per sub-model (kernels not counted)"),
            "latency_note": ((f"measured by the bench loop on {lat_kind}; " if lat_kind else "not measured; ")
                             + ("end to end = 8 × peer_encoder + pool + policy_head (the worst case, 8 peers)"
                                if cfg.pair else "end to end = one inference")),
            "quant_dataset": {"calibration": qd["calibration"], "file": "quant_dataset/quant_eval_scenarios.json",
                              **({"qat_train": qd["qat_train"]} if "qat_train" in qd else {})},
            "eval": qd["eval"], "float": fl, "candidates": candidates, "ptq_search": search, "skipped": skipped,
            "decision": decision,
        }
        paths = write_report(doc, self.out)
        self.echo(f"[dualtrack] {'winner: ' + decision['winner'] if decision['winner'] else 'no winner'}: "
                  f"{decision['why']} ({time.perf_counter() - t0:.1f} s)")
        for p in paths.values():
            self.echo(f"           wrote {p}")
        return doc


def run_dualtrack(cfg: DualTrackConfig, *, echo: Callable[[str], None] = click.echo) -> dict:
    """Run the dual track for ``cfg`` (see the module docstring); returns the ``dualtrack.json`` document."""
    return _Run(cfg, echo).run()
