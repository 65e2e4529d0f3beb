"""The fast training path on the CPU: vectorised collation of every family, length grouping that keeps the
update's gradient, prefetching that keeps the sampler's batches, and bf16 / fp16 autocast that trains like
fp32 and resumes exactly from a checkpoint. The data are test_families' fixtures (all three families)."""

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from prefinetune import distributed
from prefinetune.batching import Prefetcher, TaskArrays, collate, group_by_length, task_arrays
from prefinetune.config import DEFAULT_TRAIN
from prefinetune.data import fraction, load_tokenized
from prefinetune.disk import CHECKPOINT_BYTES_PER_PARAMETER
from prefinetune.heads import MultiTaskModel
from prefinetune.sampling import MultiTaskSampler
from prefinetune.training import backward_update, load_encoder, train
from test_families import prepared  # noqa: F401  (the module-scoped fixture)

SETTINGS = {**DEFAULT_TRAIN, "batch_size": 12, "grad_accum": 4, "lr": 1e-3, "warmup_ratio": 0.0,
            "weight_decay": 0.0, "dropout": 0.0, "log_every": 1, "loss_scaling": True}


def all_data(root, tasks):
    return {name: load_tokenized(root / "tok" / name, "train") for name in tasks}


def model_without_dropout(root, tasks, seed=0):
    torch.manual_seed(seed)
    model = MultiTaskModel(load_encoder(root / "model"), list(tasks.values()), dropout=0.0)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def test_collate_pads_every_family_as_its_rows_are_stored(prepared):  # noqa: F811
    """The vectorised collation gives exactly the rows of the datasets, padded; also on a select()ed split."""
    root, tasks, _ = prepared
    data = all_data(root, tasks)
    data["squad"] = fraction(data["squad"], 50, seed=3)  # an indices mapping, as in fine-tuning on a fraction
    batch = [("arc", 3), ("squad", 5), ("arc", 0), ("nli", 7), ("squad", 1), ("nli", 2), ("piqa", 4)]
    out = collate(task_arrays(data), batch, pad_id=1)
    expected_rows, row = [], 0
    for seg in out["segments"]:
        picked = [i for t, i in batch if t == seg.task]
        rows = [data[seg.task][i]["input_ids"] for i in picked]
        if seg.choice_counts is not None:  # one row per choice, in order
            rows = [r for i in picked for r in data[seg.task][i]["input_ids"]]
            assert seg.choice_counts == [len(data[seg.task][i]["input_ids"]) for i in picked]
            assert seg.labels.tolist() == [data[seg.task][i]["label"] for i in picked]
        elif seg.task == "squad":
            assert seg.labels.tolist() == [[data["squad"][i]["start_positions"], data["squad"][i]["end_positions"]]
                                           for i in picked]
        else:
            assert seg.labels.tolist() == [float(data[seg.task][i]["label"]) for i in picked]
        assert (seg.start, seg.end) == (row, row + len(rows))
        row += len(rows)
        expected_rows += rows
    assert [s.task for s in out["segments"]] == ["arc", "squad", "nli", "piqa"]  # order of first appearance
    width = max(map(len, expected_rows))
    assert out["input_ids"].shape == (len(expected_rows), width)
    for j, r in enumerate(expected_rows):
        assert out["input_ids"][j].tolist() == r + [1] * (width - len(r))
        assert out["attention_mask"][j].tolist() == [1] * len(r) + [0] * (width - len(r))
    assert out["input_ids"].dtype == torch.long and out["segments"][0].labels.dtype == torch.long


def test_grouping_by_length_keeps_the_update_and_its_gradient(prepared):  # noqa: F811
    """One update of 4 micro-batches of 12 heterogeneous examples: as drawn, grouped by length on one process,
    and grouped and sharded over 3 "ranks" (their gradients summed, as the all-reduce does). The three give
    the same summed gradient."""
    root, tasks, _ = prepared
    arrays = task_arrays(all_data(root, tasks))
    sampler = MultiTaskSampler({t: len(a) for t, a in arrays.items()}, 12, seed=4)
    drawn = [sampler.batch(step) for step in range(4)]
    grouped = group_by_length(drawn, arrays)
    assert sorted(x for b in grouped for x in b) == sorted(x for b in drawn for x in b)  # the same examples
    assert [len(b) for b in grouped] == [12] * 4
    longest = [[arrays[t].lengths[i] for t, i in b] for b in grouped]
    assert all(min(a) >= max(b) for a, b in zip(longest, longest[1:]))  # sorted: longest micro-batch first

    def widths(micros):  # padded width of each micro-batch
        return [collate(arrays, m, 1)["input_ids"].shape[1] for m in micros]

    # sorted, equal-sized micro-batches have the smallest summed width (fixture lengths vary little, so the
    # saving is small here; bench/throughput.py measures it on real text)
    assert widths(grouped) == sorted(widths(grouped), reverse=True)
    assert sum(widths(grouped)) <= sum(widths(drawn))

    def gradient(micro_batches_per_rank):
        model = model_without_dropout(root, tasks)
        loss = sum(backward_update(model, [collate(arrays, m, 1) for m in micros], 48, torch.device("cpu"))
                   for micros in micro_batches_per_rank)
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss_drawn, grad_drawn = gradient([drawn])
    loss_grouped, grad_grouped = gradient([grouped])
    loss_sharded, grad_sharded = gradient([[distributed.shard(m, r, 3) for m in grouped] for r in range(3)])
    assert grad_drawn.keys() == grad_grouped.keys() == grad_sharded.keys()
    assert max(g.abs().max().item() for g in grad_drawn.values()) > 1e-3  # a gradient worth comparing
    for name, g in grad_drawn.items():
        torch.testing.assert_close(grad_grouped[name], g, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
        torch.testing.assert_close(grad_sharded[name], g, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
    assert loss_grouped == pytest.approx(loss_drawn, rel=1e-5) and loss_sharded == pytest.approx(loss_drawn, rel=1e-5)


def test_prefetching_keeps_the_sampler_batches_and_states(prepared):  # noqa: F811
    root, tasks, _ = prepared
    sizes = {t: len(TaskArrays(d)) for t, d in all_data(root, tasks).items()}
    ahead, plain = MultiTaskSampler(sizes, 10, seed=2), MultiTaskSampler(sizes, 10, seed=2)
    ahead.load_state_dict({"consumed": {t: 3 for t in sizes}})  # as after a resume
    plain.load_state_dict({"consumed": {t: 3 for t in sizes}})
    with Prefetcher(lambda step: ([ahead.batch(2 * step), ahead.batch(2 * step + 1)], []), ahead, 5, 12) as prefetch:
        for step in range(5, 13):
            got_step, batches, _, state = prefetch.get()
            assert got_step == step and batches == [plain.batch(2 * step), plain.batch(2 * step + 1)]
            assert state == plain.state_dict()  # the state after this update, not after the prefetched ones


def test_prefetch_errors_reach_the_training_loop():
    def prepare(step):
        raise KeyError(f"row {step}")

    with Prefetcher(prepare, MultiTaskSampler({"a": 3}, 1, 0), 1, 3) as prefetch:
        with pytest.raises(KeyError, match="row 1"):
            prefetch.get()


def run(root, tasks, tmp_path, name, precision, steps=24, checkpoint_dir=None, **extra):
    model = model_without_dropout(root, tasks)
    settings = {**SETTINGS, "precision": precision, "checkpoint_every": 5, **extra}
    summary = train(model, all_data(root, tasks), settings, steps, pad_id=1, log_path=tmp_path / f"{name}.tsv",
                    checkpoint_dir=checkpoint_dir)
    log = pd.read_csv(tmp_path / f"{name}.tsv", sep="\t")
    return summary, log, model


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_bf16_autocast_trains_like_fp32(prepared, tmp_path):  # noqa: F811
    """bf16 autocast (fp32 weights) on the CPU: the loss curve of 24 updates stays within 0.05 (absolute, on
    losses of about 1) of fp32's, and falls as much; the weights stay fp32 and the summary says bf16."""
    root, tasks, _ = prepared
    fp32, log32, m32 = run(root, tasks, tmp_path, "fp32", "fp32")
    bf16, log16, m16 = run(root, tasks, tmp_path, "bf16", "bf16")
    w32, w16 = weights(m32), weights(m16)
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert fp32["attention"] == bf16["attention"] == "sdpa"
    assert log32["loss"].iloc[-5:].mean() < log32["loss"].iloc[:5].mean() - 0.1  # fp32 learns
    assert np.abs(log16["loss"] - log32["loss"]).max() < 0.05
    assert all(v.dtype == torch.float32 for v in w16.values() if v.is_floating_point())
    assert max((w16[k] - w32[k]).abs().max().item() for k in w32) > 0  # bf16 really ran (not a silent fp32)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_run_resumes_bit_identically(prepared, tmp_path, precision):  # noqa: F811
    """A run that saved checkpoints every 5 updates, resumed from its last one (update 10 of 12), ends with the
    weights and log of the uninterrupted run, with fp16's gradient scaler state restored too."""
    root, tasks, _ = prepared
    checkpoints = tmp_path / "checkpoints"
    full, log_full, m_full = run(root, tasks, tmp_path, "full", precision, steps=12, checkpoint_dir=checkpoints)
    saved = torch.load(checkpoints / "state.pt", weights_only=False)
    assert saved["step"] == 10
    # as the disk bill prices a checkpoint: fp32 weights and AdamW's two moments (4 bytes per parameter less or more
    # would be 177 kB here), besides some 60 kB of RNG states, log rows and per-tensor records
    parameters = sum(p.numel() for p in m_full.parameters())
    assert 0 < (checkpoints / "state.pt").stat().st_size - CHECKPOINT_BYTES_PER_PARAMETER * parameters < 100_000
    if precision == "fp16":
        assert saved["scaler"]["scale"] > 0  # the scaler's state is in the checkpoint
    resumed, log_resumed, m_resumed = run(root, tasks, tmp_path, "resumed", precision, steps=12,
                                          checkpoint_dir=checkpoints)
    w_full, w_resumed = weights(m_full), weights(m_resumed)
    assert resumed["resumed_after"] == 10 and full["resumed_after"] == 0
    for key, value in w_full.items():
        assert torch.equal(w_resumed[key], value), key
    pd.testing.assert_frame_equal(log_resumed.drop(columns="seconds"), log_full.drop(columns="seconds"))
    if precision == "bf16":  # a checkpoint of another precision is not resumed from
        assert run(root, tasks, tmp_path, "other", "fp32", steps=12, checkpoint_dir=checkpoints)[0]["resumed_after"] == 0


def test_saved_model_loads_as_fp32_after_bf16_training(prepared, tmp_path):  # noqa: F811
    from transformers import AutoTokenizer

    from prefinetune.training import save_model

    root, tasks, _ = prepared
    summary, _, model = run(root, tasks, tmp_path, "bf16", "bf16", steps=2)
    trained = weights(model)
    save_model(model, AutoTokenizer.from_pretrained(str(root / "model")), tmp_path / "out", summary)
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in saved.values() if v.is_floating_point())
    assert torch.equal(saved["embeddings.word_embeddings.weight"], trained["encoder.embeddings.word_embeddings.weight"])
    assert '"precision": "bf16"' in (tmp_path / "out" / "prefinetune.json").read_text()
