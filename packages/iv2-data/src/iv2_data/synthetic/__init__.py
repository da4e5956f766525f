"""A deterministic synthetic multimodal corpus: moving shapes and digits with captions, tones, speech, QA and
class labels.

Every clip shows ``count`` copies of one object (a shape or a seven-segment digit) of one colour moving in one
direction over a static textured background. The sound track is a tone whose pitch follows the colour, beeping
once per object; an ASR-like transcript names the object and its direction; multiple-choice questions ask about
motion, colour, count and identity; the class label is object × direction. Motion questions cannot be answered
from one frame: a clip moving right is exactly the time reversal of the same clip moving left (tested), so only
the order of frames tells them apart.

Nothing is downloaded. Everything is a pure function of ``(seed, index)``, so the corpus is the same on every
machine. By concern:

- :mod:`~iv2_data.synthetic.render`: the clips' attributes (:class:`SyntheticClip`) and rendering;
- :mod:`~iv2_data.synthetic.records`: the annotation records each clip contributes to each sample kind;
- :mod:`~iv2_data.synthetic.dataset`: :class:`SyntheticCorpus` and :class:`SyntheticDataset`, in memory;
- :mod:`~iv2_data.synthetic.files`: :func:`write_corpus`, the same corpus as files.
"""

from iv2_data.synthetic.dataset import SyntheticCorpus, SyntheticDataset
from iv2_data.synthetic.files import corpus_is_current, write_corpus, write_video
from iv2_data.synthetic.records import (
    ANNOTATION_FILES,
    CORPUS_VERSION,
    MCQA_TASKS,
    SYNTHETIC_CLASSES,
    clip_records,
    corpus_words,
)
from iv2_data.synthetic.render import (
    BACKGROUNDS,
    COLOURS,
    COUNTS,
    DIRECTIONS,
    NUMBER_WORDS,
    OBJECTS,
    PITCH_HZ,
    PITCH_WORDS,
    SyntheticClip,
    clip_spec,
    render_audio,
    render_frames,
    reversed_spec,
)

__all__ = [
    "ANNOTATION_FILES",
    "BACKGROUNDS",
    "COLOURS",
    "CORPUS_VERSION",
    "COUNTS",
    "DIRECTIONS",
    "MCQA_TASKS",
    "NUMBER_WORDS",
    "OBJECTS",
    "PITCH_HZ",
    "PITCH_WORDS",
    "SYNTHETIC_CLASSES",
    "SyntheticClip",
    "SyntheticCorpus",
    "SyntheticDataset",
    "clip_records",
    "clip_spec",
    "corpus_is_current",
    "corpus_words",
    "render_audio",
    "render_frames",
    "reversed_spec",
    "write_corpus",
    "write_video",
]
