"""Using a trained chat model: MVBench-style MC-QA evaluation, batch answering of a JSONL file, one video.

* :func:`evaluate_mcqa`: the official MVBench protocol — the Mistral prompt with ``"Best option:("``
  pre-filled (:func:`iv2_chat.mvbench_prompt`), the system prompt also given to the QFormer, greedy decoding,
  the official post-processing (:func:`iv2_chat.mvbench_prediction`) — scored per task and overall with the
  official ``check_ans`` rule (:func:`iv2_chat.check_answer`, comparable with published numbers) and the strict
  rule beside it (:func:`iv2_chat.check_answer_strict`). Items are read one by one, so an unreadable video is
  recorded as failed and left out of the accuracy, never replaced by another item (so is an item whose prompt
  does not fit the LLM's context; the others of its batch are answered as without it). With ``predictions`` a
  JSONL file keeps one row per item and a rerun continues where a killed one stopped.
* :func:`answer_file`: ``{"video", "question"[, "id"]}`` rows → one output row per input (``status`` ok /
  error: an unreadable video, or a question that does not fit the LLM's context), left-padded batched
  generation, resumable; rows made by other settings or for a changed input are redone, failed rows are retried.
* :func:`read_video`: one clip read as the chat folder's settings say.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .chat import VideoChat
from .conversation import PromptTooLongError
from .mcqa import MVBENCH_SYSTEM, QUESTION_PROMPT, check_answer, check_answer_strict, mvbench_prediction, mvbench_prompt


# ----------------------------------------------------------------------------------------------- MC-QA
@dataclass
class MCQAReport:
    """Accuracy per task and overall (``Σ correct / Σ total``, as MVBench averages), official and strict;
    ``failed``: items whose video could not be read or whose prompt does not fit the LLM's context (left out of
    the accuracy), with their errors."""

    tasks: dict[str, dict[str, float]]
    accuracy: float
    accuracy_strict: float
    total: int
    chance: float
    failed: list[dict[str, Any]] = field(default_factory=list)
    # The predicted option's text equals the answer's, whatever its letter (a diagnostic, not MVBench's rule:
    # it shows what the model saw when it has not yet learnt to point at the option's letter).
    accuracy_content: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A plain-text table (one row per task, then the overall row)."""
        rows = [f"{'task':<12} {'items':>6} {'official':>9} {'strict':>8}"]
        for task, row in self.tasks.items():
            rows.append(f"{task:<12} {row['total']:>6} {100 * row['accuracy']:>8.1f}% "
                        f"{100 * row['accuracy_strict']:>7.1f}%")
        rows.append(f"{'overall':<12} {self.total:>6} {100 * self.accuracy:>8.1f}% {100 * self.accuracy_strict:>7.1f}%"
                    f"   (chance {100 * self.chance:.1f}%)")
        if self.failed:
            rows.append(f"{len(self.failed)} item(s) could not be answered (left out): {self.failed[0]['error']}")
        return "\n".join(rows)


def qformer_mcqa_instruction(question_block: str, question_in_instruction: bool,
                             system: str = MVBENCH_SYSTEM) -> str:
    """What the QFormer reads for an MC item: the system prompt (official MVBench), plus the question block
    when the model was trained with the question in its instruction (``return_question_instruction``)."""
    if not question_in_instruction:
        return system
    return (system.strip() + " " + question_block + QUESTION_PROMPT).strip()


def evaluate_mcqa(
    chat: VideoChat,
    dataset: Any,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 100,
    question_in_instruction: bool | None = None,
    predictions: str | os.PathLike | None = None,
    hd_max_tiles: int | None = None,
    progress: bool = True,
) -> MCQAReport:
    """MVBench-style evaluation of ``chat`` on ``dataset`` (an ``iv2_data.MultipleChoiceQADataset``: its read
    config decides frames and size; MVBench uses 16 frames). See the module docstring.

    ``question_in_instruction``: default ``chat.settings``' (False for the official protocol);
    ``hd_max_tiles``: HD models read each item as an HD clip (the dataset's transform must give them).
    ``predictions``: JSONL with one row per item (``index``, ``task``, ``prediction``, ``answer``, ``correct``,
    ``correct_strict`` or ``error``), kept across reruns for the same model and settings."""
    from iv2_data import JsonlManifest
    from iv2_data.progress import progress as progress_bar

    if question_in_instruction is None:
        question_in_instruction = bool(chat.settings.get("question_in_instruction", False))
    settings = _fingerprint({"model": _model_fingerprint(chat), "max_new_tokens": max_new_tokens,
                             "question_in_instruction": question_in_instruction, "hd": hd_max_tiles,
                             "read": repr(getattr(dataset, "video", None))})
    manifest = JsonlManifest(predictions, key="item") if predictions else None
    rows: dict[str, dict[str, Any]] = {}
    pending: list[int] = []
    for index in range(len(dataset)):
        key = _item_key(dataset, index)
        done = manifest.get(key) if manifest is not None else None
        if done is not None and done.get("settings") == settings and "error" not in done:
            rows[key] = done
        else:
            pending.append(index)
    bar = progress_bar(total=len(pending), desc="MC-QA", unit="item", enabled=progress)
    try:
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            samples, failed = [], []
            for index in chunk:
                try:
                    samples.append((index, _read_item(dataset, index)))
                except OSError as error:
                    failed.append({"item": _item_key(dataset, index), "index": index, "error": f"{error}",
                                   "settings": settings})
            for row in failed:
                rows[row["item"]] = row
                if manifest is not None:
                    manifest.append(row)
            if samples:
                for row in _answer_mcqa(chat, samples, max_new_tokens, question_in_instruction, hd_max_tiles):
                    row["item"], row["settings"] = _item_key(dataset, row["index"]), settings
                    rows[row["item"]] = row
                    if manifest is not None:
                        manifest.append(row)
            bar.update(len(chunk))
    finally:
        bar.close()
        if manifest is not None:
            manifest.close()
    return _report([rows[_item_key(dataset, i)] for i in range(len(dataset))])


def _item_key(dataset: Any, index: int) -> str:
    record = dataset.records[index] if hasattr(dataset, "records") else {"index": index}
    text = json.dumps(record, sort_keys=True, default=str)
    return f"{index}:{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _read_item(dataset: Any, index: int) -> dict[str, Any]:
    """One item, read on its own: an unreadable video raises (a dataset's ``__getitem__`` would silently
    substitute the next readable record)."""
    if hasattr(dataset, "sample") and hasattr(dataset, "records"):
        record = dataset.records[index]
        return dataset.sample(record, index, dataset.media_paths(record))
    return dataset[index]


def _answer_fitting(generate: Callable[[list[int]], list[str]], count: int) -> list[tuple[str | None, str | None]]:
    """``(answer, None)`` or ``(None, error)`` for each of ``count`` items: ``generate(indices)`` answers
    those items as one batch; when a prompt does not fit the LLM's context (:class:`PromptTooLongError`), the
    batch is answered item by item (batched = one by one) and the items that do not fit get the error, so that
    one long question loses nothing else."""
    try:
        return [(text, None) for text in generate(list(range(count)))]
    except PromptTooLongError:
        out: list[tuple[str | None, str | None]] = []
        for i in range(count):
            try:
                out.append((generate([i])[0], None))
            except PromptTooLongError as error:
                out.append((None, str(error)))
        return out


def _answer_mcqa(chat: VideoChat, samples: Sequence[tuple[int, Mapping[str, Any]]], max_new_tokens: int,
                 question_in_instruction: bool, hd_max_tiles: int | None) -> list[dict[str, Any]]:
    prompts = [mvbench_prompt(s["question"], s["candidates"]).text for _, s in samples]
    instructions = [qformer_mcqa_instruction(s["prompt"], question_in_instruction) for _, s in samples]
    visual = chat.encode([s["video"] for _, s in samples], hd=hd_max_tiles is not None, instructions=instructions)

    def generate(indices: list[int]) -> list[str]:
        return chat.answer_batch(None, [], visual=[visual[i] for i in indices], prompts=[prompts[i] for i in indices],
                                 bos="first", do_sample=False, max_new_tokens=max_new_tokens)

    rows = []
    for (index, sample), (text, error) in zip(samples, _answer_fitting(generate, len(samples))):
        if error is not None:
            rows.append({"index": index, "task": sample.get("task") or "mcqa", "error": error})
            continue
        prediction = mvbench_prediction(text)
        answer = sample["target"]
        rows.append({"index": index, "task": sample.get("task") or "mcqa", "question": sample["question"],
                     "prediction": prediction, "answer": answer, "correct": check_answer(prediction, answer),
                     "correct_strict": check_answer_strict(prediction, answer),
                     "correct_content": option_text(prediction) == option_text(answer),
                     "options": len(sample["candidates"])})
    return rows


def option_text(answer: str) -> str:
    """The option text of ``"(B) down."`` → ``"down"`` (lower case, no final full stop): what
    ``accuracy_content`` compares. Not an official rule: a diagnostic beside them."""
    text = answer.strip().lower()
    if text.startswith("(") and ")" in text:
        text = text.split(")", 1)[1]
    return text.strip().rstrip(".").strip()


def _report(rows: Iterable[Mapping[str, Any]]) -> MCQAReport:
    tasks: dict[str, dict[str, float]] = {}
    failed, chance_sum, total = [], 0.0, 0
    for row in rows:
        if "error" in row:
            failed.append({"index": row["index"], "error": row["error"]})
            continue
        t = tasks.setdefault(row["task"], {"total": 0, "correct": 0, "correct_strict": 0, "correct_content": 0})
        t["total"] += 1
        t["correct"] += int(row["correct"])
        t["correct_strict"] += int(row["correct_strict"])
        t["correct_content"] += int(row.get("correct_content", False))
        chance_sum += 1.0 / max(int(row.get("options", 4)), 1)
        total += 1
    for t in tasks.values():
        t["accuracy"] = t["correct"] / t["total"]
        t["accuracy_strict"] = t["correct_strict"] / t["total"]
        t["accuracy_content"] = t["correct_content"] / t["total"]
    correct = sum(t["correct"] for t in tasks.values())
    strict = sum(t["correct_strict"] for t in tasks.values())
    content = sum(t["correct_content"] for t in tasks.values())
    return MCQAReport(tasks=dict(sorted(tasks.items())), accuracy=correct / total if total else 0.0,
                      accuracy_strict=strict / total if total else 0.0, total=total,
                      chance=chance_sum / total if total else 0.0, failed=failed,
                      accuracy_content=content / total if total else 0.0)


def _fingerprint(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _model_fingerprint(chat: VideoChat) -> str:
    """Cheap identity of the weights: a hash of a few values of every trainable tensor (rows made by another
    model must not count as done)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(chat.model.state_dict().items()):
        # the frozen base LLM is rebuilt from the folder; project_down is unused (kept for the layout) and a
        # trainable-only checkpoint may leave it at its random initialisation
        if ("lm.base_model" in name and "lora_" not in name) or name.startswith("project_down."):
            continue
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 16)][:16].float().cpu()
        digest.update(name.encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------- reading videos
def chat_transform(chat: VideoChat) -> Any:
    """The video transform of the chat folder's settings: an HD clip (:class:`iv2_chat.HDTransform`) for HD
    models, else the short side resized to the model's size and centre-cropped, normalised with its mean/std."""
    from iv2_data import CenterCropTransform

    from .hd import HDTransform

    settings = chat.settings
    size = int(settings.get("size") or chat.model.cfg.vision.img_size)
    mean, std = tuple(settings.get("mean", (0.485, 0.456, 0.406))), tuple(settings.get("std", (0.229, 0.224, 0.225)))
    if settings.get("hd"):
        return HDTransform(size, int(settings.get("hd_max_tiles", 6)), mean, std)
    return CenterCropTransform(size, mean=mean, std=std)


def mcqa_read_config(chat: VideoChat, num_frames: int | None = None, *, reader: Any = None) -> Any:
    """``iv2_data.VideoReadConfig`` for MC-QA items of ``chat``: ``num_frames`` (default: the model's) with
    segment-middle frames, :func:`chat_transform`."""
    from iv2_data import VideoReadConfig

    transform = chat_transform(chat)
    frames = num_frames or int(chat.settings.get("num_frames") or chat.model.cfg.vision.num_frames)
    size = int(chat.settings.get("size") or chat.model.cfg.vision.img_size)
    return VideoReadConfig(num_frames=frames, size=size, sampling="middle", transform=transform, reader=reader,
                           mean=getattr(transform, "mean", (0.485, 0.456, 0.406)),
                           std=getattr(transform, "std", (0.229, 0.224, 0.225)))


def read_video(chat: VideoChat, path: str | os.PathLike, *, num_frames: int | None = None) -> tuple[torch.Tensor, str]:
    """``(clip, time message)`` for one video read as the chat folder's settings say (frames, size, mean/std;
    an HD clip for HD models). Raises ``iv2_data.VideoReadError`` naming the file."""
    from .train_data import video_time_message

    video = mcqa_read_config(chat, num_frames)
    clip = video.read(path)
    return clip, video_time_message(path, video.num_frames)


# ------------------------------------------------------------------------------------------- batch answers
@dataclass
class BatchReport:
    """What :func:`answer_file` did: rows answered now, rows that failed now (recorded), rows kept from an
    earlier run, and the output file."""

    answered: int
    failed: int
    kept: int
    output: Path


def answer_file(
    chat: VideoChat,
    inputs: str | os.PathLike,
    output: str | os.PathLike,
    *,
    batch_size: int = 8,
    num_frames: int | None = None,
    generation: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_row: Any = None,
) -> BatchReport:
    """Answer every ``{"video", "question"[, "id"]}`` row of the JSONL ``inputs`` (video paths relative to its
    folder) into the JSONL ``output``: one row per input ``{"id", "video", "question", "status": "ok" |
    "error", "answer" | "error", "settings"}``; videos are read one by one (an unreadable one gives an error
    row, the run goes on) and answered in left-padded batches of ``batch_size``. Resumable: a rerun keeps the
    ``ok`` rows of the same input and settings and redoes the rest (failed rows are retried; a changed
    question, video file or model is never reported as done). ``on_row(row)`` sees every new row."""
    from iv2_data import JsonlManifest
    from iv2_data.progress import progress as progress_bar

    inputs = Path(inputs)
    options = {"do_sample": False, "max_new_tokens": 200, **(generation or {})}
    settings = _fingerprint({"model": _model_fingerprint(chat), "generation": options, "frames": num_frames,
                             "settings": chat.settings})
    rows = _read_inputs(inputs)
    manifest = JsonlManifest(output, key="key")
    todo, kept = [], 0
    for row in rows:
        done = manifest.get(row["key"])
        if done is not None and done.get("status") == "ok" and done.get("settings") == settings:
            kept += 1
        else:
            todo.append(row)
    answered = failed = 0
    bar = progress_bar(total=len(todo), desc="answers", unit="video", enabled=progress)
    try:
        for start in range(0, len(todo), batch_size):
            chunk, clips, msgs, ready = todo[start:start + batch_size], [], [], []
            for row in chunk:
                out = {"key": row["key"], "id": row["id"], "video": row["video"], "question": row["question"],
                       "settings": settings}
                try:
                    clip, msg = read_video(chat, row["path"], num_frames=num_frames)
                except OSError as error:
                    out.update(status="error", error=str(error))
                    manifest.append(out)
                    failed += 1
                    if on_row:
                        on_row(out)
                    continue
                clips.append(clip)
                msgs.append(msg)
                ready.append(out)
            if ready:
                visual = chat.encode(clips, hd=bool(chat.settings.get("hd")))

                def generate(indices: list[int], clips=clips, visual=visual, msgs=msgs, ready=ready) -> list[str]:
                    return chat.answer_batch([clips[i] for i in indices], [ready[i]["question"] for i in indices],
                                             visual=[visual[i] for i in indices], msgs=[msgs[i] for i in indices],
                                             **options)

                for out, (text, error) in zip(ready, _answer_fitting(generate, len(ready))):
                    if error is None:
                        out.update(status="ok", answer=text)
                        answered += 1
                    else:  # the question does not fit the LLM's context: recorded, the run goes on
                        out.update(status="error", error=error)
                        failed += 1
                    manifest.append(out)
                    if on_row:
                        on_row(out)
            bar.update(len(chunk))
    finally:
        bar.close()
        manifest.close()
    return BatchReport(answered, failed, kept, Path(output))


def _read_inputs(path: Path) -> list[dict[str, Any]]:
    """The input rows, each with ``key`` (id + question + the video file's size and mtime), ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not a JSON object ({error.msg})") from None
        if not (isinstance(row, dict) and isinstance(row.get("video"), str)
                and isinstance(row.get("question"), str)):
            raise ValueError(f"{path}, line {number}: needs string fields 'video' and 'question', got {line[:120]!r}")
        video = Path(row["video"])
        full = video if video.is_absolute() else path.parent / video
        identity = str(row.get("id", number))
        try:
            stat = full.stat()
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        key = _fingerprint([identity, row["video"], row["question"], stamp])
        rows.append({"key": key, "id": identity, "video": row["video"], "question": row["question"],
                     "path": full})
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{path}: id {dup!r} appears more than once (ids name the output rows)")
    return rows
