"""Reading checkpoints and loading them into models, checked: one place for every iv2 package.

Two layers:

* :func:`read_state_dict` and :func:`load_state_dict_checked` are generic — any model, any key map. The stage
  packages (iv2-distill, iv2-align, iv2-chat) load official checkpoints through them with their own renames:
  files are safetensors (single or sharded through a ``*.safetensors.index.json``) or torch pickles loaded
  with ``weights_only=True``; wrappers ``module`` / ``model`` / ``state_dict`` are unwrapped; a key whose shape
  differs from the model's is an error naming the key and both shapes; keys the model does not have are
  dropped and reported; a parameter the checkpoint lacks is an error unless ``strict=False``.
* :func:`load_checkpoint` is the encoder's loader on top (timm's ``checkpoint_filter_fn`` habit):

  - the vision tower is found by its ``patch_embed.proj.weight`` key, whatever precedes it (``module.``,
    ``vision_encoder.``, ``module.vision_encoder.``, a chat model's tower prefix ...); keys under any other
    prefix (text/audio encoders, QFormer, LLM, projections) are dropped and reported;
  - distillation heads (``clip_decoder``, ``final_clip_decoder``, ``mae_decoder``, ``clip_pos_embed``,
    ``mae_pos_embed``, ...) and classifier heads are dropped and reported;
  - position embeddings are resampled to the model's frame count (linear in time) and size (bicubic in space)
    like the official ``interpolate_pos_embed_internvideo2``; ``img_pos_embed`` is resampled in space when the
    model has one (its config decides: a checkpoint's ``img_pos_embed`` into a model without one is dropped,
    a model with one loading a checkpoint without it reports it missing);
  - LayerScale keys load in either naming (``ls1.gamma`` of stage 1/2, bare ``ls1`` of the chat tower);
  - a tensor of another size is reported as such before any frame-count question is asked.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .model import VideoEncoder, layerscale_key_map
from .pos_embed import interpolate_pos_embed

_ANCHOR = "patch_embed.proj.weight"
_WRAPPERS = ("module", "model", "state_dict")
_POSITION_TABLES = ("pos_embed", "img_pos_embed")
# what read_state_dict looks for in a folder, in this order (save_pretrained writes the first)
_FOLDER_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


@dataclass
class LoadResult:
    """What a checked load did: model keys the checkpoint lacked (``missing``) and checkpoint keys not used
    (``dropped``, under their names in the checkpoint). Unpacks as ``missing, dropped``. ``prefix``: where the
    encoder found the vision tower; ``num_frames``: the frame count its position table was read as."""

    missing: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    prefix: str = ""
    num_frames: int | None = None
    source: str = ""

    def __iter__(self):  # ``missing, dropped = load_checkpoint(...)``
        return iter((self.missing, self.dropped))


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or loaded into the model; the message names the file and key."""


# ------------------------------------------------------------------------------------------------- reading
def read_state_dict(path: str | os.PathLike, *, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Read a checkpoint into a flat ``{key: tensor}`` dict, unwrapping the released wrappers.

    ``path``: a ``.safetensors`` file, a sharded checkpoint's ``*.index.json``, a torch file (loaded with
    ``weights_only=True``: a pickle that wants to build Python objects is refused), or a folder holding one of
    ``model.safetensors``, ``model.safetensors.index.json``, ``pytorch_model.bin``. ``prefix``: read only keys
    starting with it (safetensors files and shards are then read lazily; shards without such keys are skipped).
    Errors name the file: :class:`FileNotFoundError` for a missing path, :class:`CheckpointError` otherwise.
    """
    path = _checkpoint_file(Path(path))
    if path.name.endswith(".index.json"):
        return _read_sharded(path, prefix)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes), not a checkpoint")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, prefix)
    obj = _torch_load(path)
    for _ in range(3):  # e.g. {"module": {...}} or {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping) and not _is_state_dict(obj):
            inner = next((obj[k] for k in _WRAPPERS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise CheckpointError(f"{path}: no state dict found (top-level keys: {_head(obj)})")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor) and (prefix is None or k.startswith(prefix))}


def checkpoint_files(path: str | os.PathLike) -> list[Path]:
    """The files :func:`read_state_dict` (and a ``save_pretrained`` folder's ``config.json``) would read for
    ``path``: what identifies a checkpoint's content (``iv2-encoders extract`` hashes them). A sharded
    checkpoint gives its index and every shard it names."""
    path = Path(path)
    files = [path / "config.json"] if path.is_dir() and (path / "config.json").is_file() else []
    path = _checkpoint_file(path)
    files.append(path)
    if path.name.endswith(".index.json"):
        files += [path.parent / shard for shard in sorted(set(_weight_map(path).values()))]
    return files


def _checkpoint_file(path: Path) -> Path:
    """The file a checkpoint path names: itself, or the checkpoint file inside a folder."""
    if path.is_dir():
        found = next((path / name for name in _FOLDER_FILES if (path / name).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path}: no checkpoint in this folder (looked for {', '.join(_FOLDER_FILES)}; "
                                    f"it has {sorted(p.name for p in path.iterdir())[:10]})")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _weight_map(index: Path) -> dict[str, str]:
    try:
        return json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index}: not a sharded-checkpoint index (needs a 'weight_map'): {err}") from err


def _read_safetensors(path: Path, prefix: str | None) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = f.keys()  # safe_open is not a mapping: it has keys() but no __iter__
            return {k: f.get_tensor(k) for k in names if prefix is None or k.startswith(prefix)}
    except SafetensorError as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def _read_sharded(index: Path, prefix: str | None) -> dict[str, torch.Tensor]:
    weight_map = _weight_map(index)
    shards = sorted({shard for key, shard in weight_map.items() if prefix is None or key.startswith(prefix)})
    out: dict[str, torch.Tensor] = {}
    for shard in shards:
        out.update(read_state_dict(index.parent / shard, prefix=prefix))
    return out


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            why = (f"it holds a Python object ({found.group(1)}), and building Python objects while loading can "
                   "run code, so only tensors and plain containers are loaded (weights_only=True)")
        else:
            why = "its pickle stream is not a torch checkpoint (corrupt, truncated or another format)"
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint: {why}") from None
    except Exception as err:  # zip/EOF/runtime errors of torch.load: a corrupt or foreign file
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({type(err).__name__}: "
                              f"{detail[:200]})") from None


def _is_state_dict(obj: Mapping) -> bool:
    return any(isinstance(v, torch.Tensor) for v in obj.values())


def _head(obj: object) -> str:
    return str(sorted(obj)[:10]) if isinstance(obj, Mapping) else type(obj).__name__


# ----------------------------------------------------------------------------------------- checked loading
Rename = Callable[[str], "str | None"] | Mapping[str, str]
Drop = Callable[[str], bool] | Iterable[str]


def load_state_dict_checked(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    strict: bool = True,
    rename: Rename | None = None,
    drop: Drop | None = None,
    allow_missing: Iterable[str] = (),
) -> LoadResult:
    """Load ``state`` into ``model`` in place, checking every key; the shared loader of the iv2 packages.

    - ``rename``: maps a checkpoint key to the model's key — a callable (returning None drops the key) or a
      ``{old_prefix: new_prefix}`` mapping (the longest matching prefix wins; ``{"mistral_model.": "lm."}``).
    - ``drop``: checkpoint keys (after renaming) to leave out on purpose — a callable or an iterable of
      prefixes; they are reported in ``dropped`` like keys the model does not have.
    - A key whose shape differs from the model's raises :class:`CheckpointError` naming ``source``, the key and
      both shapes. Keys the model lacks are dropped and reported.
    - ``strict`` (default): a model parameter or buffer that the checkpoint does not provide raises
      :class:`CheckpointError` naming ``source`` and the keys, unless it starts with one of ``allow_missing``
      (e.g. a frozen base model that comes from elsewhere). ``strict=False`` loads what there is and returns
      the rest in ``missing``.

    A model built under ``torch.device("meta")`` gets the checkpoint's tensors assigned (nothing is copied).
    Returns :class:`LoadResult` (``missing`` sorted by the model's names, ``dropped`` by the checkpoint's).
    """
    own = model.state_dict()
    rename_fn = _rename_function(rename)
    drop_fn = _drop_function(drop)
    dropped, to_load, origin = [], {}, {}
    for key, value in state.items():
        new = rename_fn(key)
        if new is None or drop_fn(new) or new not in own:
            dropped.append(key)
            continue
        if new in to_load:
            raise CheckpointError(f"{source}: keys {origin[new]!r} and {key!r} both map to the model's {new!r}")
        if tuple(own[new].shape) != tuple(value.shape):
            named = repr(key) if new == key else f"{key!r} (the model's {new!r})"
            raise CheckpointError(f"{source}: key {named} has shape {tuple(value.shape)} but the model expects "
                                  f"{tuple(own[new].shape)}")
        to_load[new], origin[new] = value, key
    missing = sorted(k for k in own if k not in to_load)
    allowed = tuple(allow_missing)
    fatal = [k for k in missing if not (allowed and k.startswith(allowed))]
    if strict and fatal:
        shown = ", ".join(fatal[:8]) + (f", ... ({len(fatal)} in all)" if len(fatal) > 8 else "")
        raise CheckpointError(f"{source}: the checkpoint lacks {len(fatal)} parameter(s) the model needs: {shown}; "
                              "pass strict=False to load the rest and keep these as they are")
    model.load_state_dict(to_load, strict=False, assign=_is_meta(model))
    return LoadResult(missing=missing, dropped=sorted(dropped), source=source)


def _rename_function(rename: Rename | None) -> Callable[[str], str | None]:
    if rename is None:
        return lambda key: key
    if callable(rename):
        return rename
    prefixes = sorted(rename.items(), key=lambda item: len(item[0]), reverse=True)

    def by_prefix(key: str) -> str:
        for old, new in prefixes:
            if key.startswith(old):
                return new + key[len(old):]
        return key

    return by_prefix


def _drop_function(drop: Drop | None) -> Callable[[str], bool]:
    if drop is None:
        return lambda key: False
    if callable(drop):
        return drop
    prefixes = tuple(drop)
    return lambda key: bool(prefixes) and key.startswith(prefixes)


def _is_meta(model: torch.nn.Module) -> bool:
    return any(t.is_meta for t in (*model.parameters(), *model.buffers()))


# ---------------------------------------------------------------------------------------- the encoder's loader
def split_vision_prefix(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"):
    """Return ``(prefix, tower, other)``: the vision tower's keys without their prefix, and the rest."""
    anchors = [k[: -len(_ANCHOR)] for k in state_dict if k.endswith(_ANCHOR)]
    if not anchors:
        raise CheckpointError(f"{source}: no vision encoder found (no key ending in {_ANCHOR!r}); "
                              f"first keys: {sorted(state_dict)[:8]}")
    prefix = min(anchors, key=len)  # the outermost tower if several (e.g. a student and its teacher)
    tower, other = {}, []
    for k, v in state_dict.items():
        if k.startswith(prefix):
            tower[k[len(prefix):]] = v
        else:
            other.append(k)
    return prefix, tower, other


def infer_num_frames(rows: int, model: VideoEncoder, source: str = "checkpoint") -> int:
    """Frame count a ``pos_embed`` of ``rows`` patch rows was trained with (see DESIGN.md)."""
    t_model, h, w = model.cfg.grid_size
    candidates = set()
    if rows % (h * w) == 0:  # the model's spatial grid
        candidates.add(rows // (h * w) * model.cfg.tubelet_size)
    if rows % t_model == 0 and math.isqrt(rows // t_model) ** 2 == rows // t_model:  # the model's frames
        candidates.add(model.cfg.num_frames)
    if len(candidates) != 1:
        why = "fits no" if not candidates else f"fits several ({sorted(candidates)})"
        raise CheckpointError(
            f"{source}: pos_embed with {rows} patch rows {why} frame count for a model of grid "
            f"{t_model}x{h}x{w}; give the frame count the checkpoint was trained with (load_checkpoint: "
            "num_frames=, create_model: checkpoint_num_frames=, iv2 extract: --checkpoint-frames)"
        )
    return candidates.pop()


def _resample(name: str, table: torch.Tensor, model: VideoEncoder, num_frames: int, source: str) -> torch.Tensor:
    t_model, h, w = model.cfg.grid_size
    rows = table.shape[-2] - 1
    t_src = max(num_frames // model.cfg.tubelet_size, 1)
    if rows % t_src or math.isqrt(rows // t_src) ** 2 != rows // t_src:
        raise CheckpointError(f"{source}: {name} has {rows} patch rows, not {t_src} frame(s) of a square grid")
    side = math.isqrt(rows // t_src)
    dst_t = 1 if name == "img_pos_embed" else t_model
    return interpolate_pos_embed(table.reshape(1, rows + 1, -1), (t_src, side, side), (dst_t, h, w))


def _check_sizes(tower: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], prefix: str, source: str,
                 model: VideoEncoder) -> None:
    """Shape mismatches are reported first, as what they are (another model size), before frame counts."""
    cause = (f"the checkpoint is probably of another model size than width {model.cfg.embed_dim} / depth "
             f"{model.cfg.depth} (pick the matching create_model name)")
    for k, v in tower.items():
        if k not in own:
            continue
        expected = tuple(own[k].shape)
        same = expected[-1:] == tuple(v.shape[-1:]) if k in _POSITION_TABLES else expected == tuple(v.shape)
        if not same:
            raise CheckpointError(f"{source}: key {prefix + k!r} has shape {tuple(v.shape)} but the model expects "
                                  f"{expected}; {cause}")


def load_checkpoint(
    model: VideoEncoder,
    path: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    num_frames: int | None = None,
    strict: bool = True,
    source: str | None = None,
) -> LoadResult:
    """Load a released InternVideo2 checkpoint (file, folder or state dict) into ``model`` in place.

    ``num_frames`` is the frame count the checkpoint was trained with (official ``origin_num_frames``); when
    omitted it is inferred from the ``pos_embed`` rows, and an ambiguous table is an error asking for it.
    ``strict`` (default): a parameter of ``model`` the checkpoint lacks raises :class:`CheckpointError` naming
    the keys and the file; ``strict=False`` returns them in ``missing``. Keys the model has no use for are
    dropped and reported. A tensor of another shape raises :class:`CheckpointError` naming the key, both shapes
    and the likely cause. ``source``: the name errors give a state dict (default ``"state dict"``).
    Returns :class:`LoadResult` (iterable as ``missing, dropped``).
    """
    if isinstance(path, Mapping):
        source, state = source or "state dict", dict(path)
    else:
        source, state = source or str(path), read_state_dict(path)
    prefix, tower, other = split_vision_prefix(state, source)
    own = model.state_dict()
    # LayerScale is ``blocks.N.ls1.gamma`` in stage-1/2 checkpoints and bare ``blocks.N.ls1`` in the
    # InternVideo2-Chat tower: read either into the model's own naming (``cfg.layerscale_keys``).
    original = {}  # model-layout name -> the checkpoint's own name, for reporting
    for old, new in layerscale_key_map(list(tower), model.cfg.layerscale_keys).items():
        tower[new] = tower.pop(old)
        original[new] = old
    _check_sizes(tower, own, prefix, source, model)
    if "pos_embed" in tower:
        if num_frames is None:
            num_frames = infer_num_frames(tower["pos_embed"].shape[-2] - 1, model, source)
        tower["pos_embed"] = _resample("pos_embed", tower["pos_embed"], model, num_frames, source)
    if "img_pos_embed" in tower and "img_pos_embed" in own:
        tower["img_pos_embed"] = _resample("img_pos_embed", tower["img_pos_embed"], model, 1, source)
    result = load_state_dict_checked(model, tower, source=source, strict=strict)
    dropped = sorted([*other, *(prefix + original.get(k, k) for k in result.dropped)])
    return LoadResult(missing=result.missing, dropped=dropped, prefix=prefix, num_frames=num_frames, source=source)


# ------------------------------------------------------------------------------------------------- writing
def save_checkpoint(model: VideoEncoder, path: str | os.PathLike) -> None:
    """Write the encoder's weights as safetensors (:func:`iv2_data.atomic_write`: complete or absent, with the
    umask's permissions)."""
    from safetensors.torch import save_file

    from iv2_data import atomic_write

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_write(path) as partial:
        save_file(tensors, str(partial), metadata={"format": "pt", "iv2_config": json.dumps(model.cfg.to_dict())})
