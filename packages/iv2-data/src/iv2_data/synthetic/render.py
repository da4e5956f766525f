"""The synthetic clips: their attributes (:class:`SyntheticClip`, a pure function of ``(seed, index)``) and
how they look and sound (:func:`render_frames`, :func:`render_audio`).

Every clip shows ``count`` copies of one object (a shape or a seven-segment digit) of one colour moving in one
direction over a static textured background. The sound track is a tone whose pitch follows the colour, beeping
once per object. Motion cannot be seen in one frame: a clip moving right is exactly the time reversal of the
same clip moving left (tested), so only the order of frames tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "COUNTS",
    "DIRECTIONS",
    "NUMBER_WORDS",
    "OBJECTS",
    "PITCH_HZ",
    "PITCH_WORDS",
    "SyntheticClip",
    "clip_spec",
    "render_audio",
    "render_frames",
    "reversed_spec",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 200, 60),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 30),
    "magenta": (220, 50, 210),
    "cyan": (40, 215, 225),
}
# Tone pitch per colour (Hz): spread over the Mel scale so each lands in its own fbank bins.
PITCH_HZ: dict[str, float] = {
    "red": 300.0,
    "green": 450.0,
    "blue": 650.0,
    "yellow": 950.0,
    "magenta": 1400.0,
    "cyan": 2000.0,
}
PITCH_WORDS: dict[str, str] = {
    "red": "very low",
    "green": "low",
    "blue": "medium",
    "yellow": "high",
    "magenta": "very high",
    "cyan": "shrill",
}
OBJECTS = ("circle", "square", "triangle", "cross", "2", "3", "5", "7")
DIRECTIONS = ("left", "right", "up", "down")
BACKGROUNDS = ("striped", "checkered", "dotted", "noisy")
COUNTS = (1, 2, 3)
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}

# Seven-segment digits: which of the segments a (top), b (top right), c (bottom right), d (bottom),
# e (bottom left), f (top left), g (middle) are lit.
_SEGMENTS = {"2": "abged", "3": "abgcd", "5": "afgcd", "7": "abc"}


@dataclass(frozen=True)
class SyntheticClip:
    """The attributes of one synthetic clip; everything rendered follows from them."""

    index: int
    object: str
    colour: str
    direction: str
    background: str
    count: int
    # Where the trajectory sits, as fractions of the frame; shared by a direction and its reverse.
    anchor: tuple[float, float]
    tint: tuple[int, int, int]
    texture_seed: int

    @property
    def is_digit(self) -> bool:
        return self.object.isdigit()

    def noun(self, plural: bool = False) -> str:
        if not plural:
            return self.object
        return self.object + ("es" if self.object.endswith("s") else "s")

    def identity_name(self) -> str:
        return f"the digit {self.object}" if self.is_digit else f"a {self.object}"

    def subject(self) -> str:
        if self.count == 1:
            return f"a {self.colour} {self.noun()}"
        return f"{NUMBER_WORDS[self.count]} {self.colour} {self.noun(plural=True)}"

    def captions(self) -> list[str]:
        """Several paraphrases of the visual content (the official layout's multiple captions)."""
        verb = "moves" if self.count == 1 else "move"
        verbing = "moving"
        return [
            f"{self.subject()} {verb} {self.direction} across a {self.background} background",
            f"{self.subject()} {verbing} {self.direction} over a {self.background} texture",
            f"on a {self.background} background, {self.subject()} {verb} towards the {self.direction}",
        ]

    def audio_caption(self) -> str:
        times = {1: "once", 2: "twice", 3: "three times"}[self.count]
        return f"a {PITCH_WORDS[self.colour]} tone beeps {times}"

    def transcript(self) -> str:
        """An ASR-like 'speech' line: it names the object and the direction, not the colour."""
        name = f"number {self.object}" if self.is_digit else self.object
        templates = (
            f"look at the {name} going {self.direction}",
            f"here comes the {name} heading {self.direction}",
            f"watch the {name} it is moving {self.direction}",
        )
        return templates[self.index % len(templates)]

    def avs_caption(self) -> str:
        """One fused audio-visual-speech caption, the form the paper's VidCap fuser produces."""
        return f"{self.captions()[0]} while {self.audio_caption()} and someone says {self.transcript()}"


def clip_spec(index: int, seed: int = 0) -> SyntheticClip:
    """The attributes of clip ``index`` of the corpus with ``seed``: a pure function of both."""
    rng = np.random.default_rng([seed, index, 0x5EED])
    return SyntheticClip(
        index=index,
        object=OBJECTS[rng.integers(len(OBJECTS))],
        colour=list(COLOURS)[rng.integers(len(COLOURS))],
        direction=DIRECTIONS[rng.integers(len(DIRECTIONS))],
        background=BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
        count=int(COUNTS[rng.integers(len(COUNTS))]),
        anchor=(float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0))),
        tint=_muted_colour(rng),
        texture_seed=int(rng.integers(2**31)),
    )


def _muted_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A background tint of any hue, moderately saturated and darkish, so saturated objects stand out."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.25, 0.5), rng.uniform(0.4, 0.6))
    return (round(r * 255), round(g * 255), round(b * 255))


# ---------------------------------------------------------------------------------------------------------
# Rendering


def _background(spec: SyntheticClip, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(4, size // 8)
    if spec.background == "striped":
        pattern = ((xx + yy) // (period // 2)) % 2
    elif spec.background == "checkered":
        pattern = ((xx // period) + (yy // period)) % 2
    elif spec.background == "dotted":
        cy, cx = yy % period - period / 2, xx % period - period / 2
        pattern = (cy**2 + cx**2 <= (period / 4) ** 2).astype(np.int64)
    else:  # noisy: blocky value noise
        rng = np.random.default_rng(spec.texture_seed)
        coarse = rng.random((size // 4 + 1, size // 4 + 1))
        pattern = coarse[yy // 4, xx // 4]
    tint = np.asarray(spec.tint, dtype=np.float32)
    # Low-contrast texture so that the objects stand out but the background still carries appearance.
    image = tint[None, None, :] * (0.8 + 0.35 * pattern[..., None].astype(np.float32))
    return np.clip(image, 0, 255).astype(np.uint8)


def _object_mask(kind: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if kind == "circle":
        return dy**2 + dx**2 <= r**2
    if kind == "square":
        return (np.abs(dy) <= 0.85 * r) & (np.abs(dx) <= 0.85 * r)
    if kind == "triangle":  # apex up
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    if kind == "cross":
        bar = r / 3
        return ((np.abs(dx) <= bar) & (np.abs(dy) <= r)) | ((np.abs(dy) <= bar) & (np.abs(dx) <= r))
    if kind in _SEGMENTS:
        half_w, half_h, t = 0.6 * r, r, max(1.0, r / 4)
        segments = {
            "a": (np.abs(dy + half_h) <= t) & (np.abs(dx) <= half_w),
            "g": (np.abs(dy) <= t) & (np.abs(dx) <= half_w),
            "d": (np.abs(dy - half_h) <= t) & (np.abs(dx) <= half_w),
            "f": (np.abs(dx + half_w) <= t) & (dy >= -half_h) & (dy <= 0),
            "b": (np.abs(dx - half_w) <= t) & (dy >= -half_h) & (dy <= 0),
            "e": (np.abs(dx + half_w) <= t) & (dy >= 0) & (dy <= half_h),
            "c": (np.abs(dx - half_w) <= t) & (dy >= 0) & (dy <= half_h),
        }
        mask = np.zeros_like(dy, dtype=bool)
        for name in _SEGMENTS[kind]:
            mask |= segments[name]
        return mask
    raise ValueError(f"unknown synthetic object {kind!r}; expected one of {OBJECTS}")


def _centres(spec: SyntheticClip, num_frames: int, size: int) -> list[list[tuple[float, float]]]:
    """Object centres per frame. Moving right is the time reversal of moving left (same for up/down)."""
    radius = 0.1 * size
    margin = radius + 1
    travel = 0.45 * size
    spacing = 2.5 * radius
    horizontal = spec.direction in ("left", "right")
    # Along the motion axis: the trajectory runs between `low` and `low + travel`.
    low = margin + spec.anchor[0] * (size - 2 * margin - travel)
    # Across it: the group of `count` objects is centred at `across`.
    group = (spec.count - 1) * spacing
    across = margin + group / 2 + spec.anchor[1] * max(0.0, size - 2 * margin - group)
    positions = []
    for t in range(num_frames):
        progress = t / max(1, num_frames - 1)
        if spec.direction in ("right", "down"):
            along = low + progress * travel
        else:
            along = low + (1 - progress) * travel
        frame = []
        for k in range(spec.count):
            offset = across - group / 2 + k * spacing
            frame.append((offset, along) if horizontal else (along, offset))  # (y, x)
        positions.append(frame)
    return positions


def render_frames(spec: SyntheticClip, num_frames: int = 8, size: int = 64) -> np.ndarray:
    """RGB frames ``(num_frames, size, size, 3)`` uint8 of ``spec``."""
    if num_frames < 1 or size < 16:
        raise ValueError(f"need num_frames >= 1 and size >= 16, got {num_frames} and {size}")
    background = _background(spec, size)
    colour = np.asarray(COLOURS[spec.colour], dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t, centres in enumerate(_centres(spec, num_frames, size)):
        frame = background.copy()
        for cy, cx in centres:
            frame[_object_mask(spec.object, yy, xx, cy, cx, 0.1 * size)] = colour
        frames[t] = frame
    return frames


def render_audio(spec: SyntheticClip, seconds: float, sample_rate: int = 16_000) -> np.ndarray:
    """Mono float32 waveform: a tone at the colour's pitch, beeping ``count`` times, amplitude 0.5."""
    n = round(seconds * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    tone = np.sin(2 * np.pi * PITCH_HZ[spec.colour] * t)
    # `count` equal slots; each beep fills the middle 60 % of its slot with 5 ms ramps against clicks.
    envelope = np.zeros(n)
    slot = n / spec.count
    ramp = max(1, int(0.005 * sample_rate))
    for k in range(spec.count):
        start, stop = int(k * slot + 0.2 * slot), int(k * slot + 0.8 * slot)
        length = stop - start
        env = np.ones(length)
        r = min(ramp, length // 2)
        if r > 0:
            env[:r] = np.linspace(0, 1, r)
            env[-r:] = np.linspace(1, 0, r)
        envelope[start:stop] = env
    return (0.5 * tone * envelope).astype(np.float32)


def reversed_spec(spec: SyntheticClip) -> SyntheticClip:
    """The same clip moving the opposite way (its frames are this clip's frames in reverse order)."""
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    return replace(spec, direction=opposite[spec.direction])
