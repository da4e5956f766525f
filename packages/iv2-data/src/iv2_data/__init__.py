"""iv2-data: Video/audio decoding, datasets, shards, synthetic corpus and curation for InternVideo2."""

from iv2_data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCropTransform,
    RandomResizedCropTransform,
)
from iv2_data.video import VideoInfo, VideoReadError, probe_video, read_clip, read_frames, sample_frame_indices
