"""Where a dataset's videos and labels come from: class folders or annotation lists (torch-free).

Two layouts, both common in action recognition:

- class folders (UCF101 style): ``ROOT/<class>/<video>.mp4``; label = index of the folder
  name in ``ROOT/classes.txt`` if present, else in the sorted folder names.
- annotation lists (MMAction2 style): ``ROOT/train.txt`` with one ``relative/path label``
  per line (``path num_frames label`` is accepted too), class names from ``classes.txt``.

Every problem is an ``EdgevidError`` naming the file, because a wrong label is silent: a
model trains happily on it and reports a worse accuracy than it has.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgevid.data.video_io import VIDEO_EXTENSIONS, is_video_file
from edgevid.errors import EdgevidError

log = logging.getLogger(__name__)

CLASSES_FILE = "classes.txt"
_SHOW = 3  # how many offending paths an error message lists


class DatasetError(EdgevidError):
    """A dataset folder or list is unusable (empty, one class, missing files, bad labels)."""


@dataclass(frozen=True)
class Sample:
    """One labelled video."""

    path: Path
    label: int


@dataclass
class SampleList:
    """The labelled videos of one split, with the class names their labels index."""

    root: Path
    classes: list[str]
    samples: list[Sample] = field(default_factory=list)
    source: str = ""  # human-readable origin, for messages: "ROOT/train.txt", "class folders of ROOT"

    def __len__(self) -> int:
        return len(self.samples)


def first_few(items: list[str]) -> str:
    """The first few items of a list for an error message, with ', ...' if there are more."""
    shown = ", ".join(items[:_SHOW])
    return shown + (", ..." if len(items) > _SHOW else "")


def read_classes_file(path: str | os.PathLike) -> list[str]:
    """Class names, one per line (index = line number among non-blank lines)."""
    path = Path(path)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{path} names a class twice: {first_few(duplicates)}")
    if len(names) < 2:
        raise DatasetError(f"{path} lists {len(names)} class(es): a classifier needs at least two")
    return names


def _find_classes_file(*dirs: Path) -> Path | None:
    for d in dirs:
        if (d / CLASSES_FILE).is_file():
            return d / CLASSES_FILE
    return None


def load_class_folders(root: str | os.PathLike, classes: list[str] | None = None) -> SampleList:
    """Videos in ``root/<class>/``; labels from ``classes``, ``root/classes.txt`` or sorted folder names.

    Every non-hidden sub-folder is a class, even an empty one, so the labels depend only on
    folder names and a train and a val folder with the same classes agree on them.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes_file = None
    if classes is None:
        classes_file = _find_classes_file(root)
        classes = read_classes_file(classes_file) if classes_file else folders
    index = {name: i for i, name in enumerate(classes)}
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise DatasetError(
            f"{root} has class folders not named in {classes_file or 'the class list'}: {first_few(unknown)}"
        )
    samples = [
        Sample(path, index[name])
        for name in folders
        for path in sorted((root / name).iterdir())
        if path.is_file() and is_video_file(path)
    ]
    if not samples:
        loose = [p.name for p in root.iterdir() if p.is_file() and is_video_file(p)]
        hint = f"; the {len(loose)} videos directly in it need to be in class sub-folders" if loose else ""
        raise DatasetError(
            f"no videos found in {root}: expected {root}/<class>/<video> with extension "
            f"{'/'.join(VIDEO_EXTENSIONS)}, or a train.txt/val.txt annotation list{hint}"
        )
    used = sorted({classes[s.label] for s in samples})
    if len(classes) < 2 or len(used) < 2:
        raise DatasetError(
            f"{root} has videos of only one class ({used[0]}): a classifier needs at least two class folders"
        )
    empty = [name for name in folders if not any(s.label == index[name] for s in samples)]
    if empty:
        log.warning("%s: %d class folders hold no videos: %s", root, len(empty), first_few(empty))
    return SampleList(root, list(classes), samples, f"class folders of {root}")


def _parse_lines(list_file: Path) -> list[tuple[int, str, str]]:
    """(line number, path, label text) per non-blank, non-comment line."""
    rows = [
        (n, line.strip())
        for n, line in enumerate(list_file.read_text().splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    # Three columns (MMAction2 rawframes style: path num_frames label) only if every line has
    # them; otherwise the label is the last token and the path may contain spaces.
    three = bool(rows) and all(len(t) == 3 and t[1].isdigit() for t in (r.split() for _, r in rows))
    parsed = []
    for n, row in rows:
        if three:
            path, _, label = row.split()
        else:
            parts = row.rsplit(maxsplit=1)
            if len(parts) != 2:
                raise DatasetError(f"{list_file}:{n}: expected 'path label', got {row!r}")
            path, label = parts
        parsed.append((n, path, label))
    return parsed


def _infer_classes(samples: list[Sample], root: Path) -> list[str]:
    """Class names for a list without classes.txt: the videos' folder names if they agree with the labels."""
    count = max(s.label for s in samples) + 1
    names: dict[int, set[str]] = {}
    for s in samples:
        rel = s.path.relative_to(root) if s.path.is_relative_to(root) else s.path
        names.setdefault(s.label, set()).add(rel.parts[0] if len(rel.parts) > 1 else "")
    folder = {label: next(iter(n)) for label, n in names.items() if len(n) == 1 and "" not in n}
    consistent = len(folder) == len(names) and len(set(folder.values())) == len(folder)
    return [folder[i] if consistent and i in folder else f"class_{i}" for i in range(count)]


def load_annotation_list(
    list_file: str | os.PathLike, root: str | os.PathLike | None = None, classes: list[str] | None = None
) -> SampleList:
    """Videos named by an annotation list (``path label`` per line, paths relative to ``root``).

    ``root`` defaults to the list's folder. Class names come from ``classes``, a
    ``classes.txt`` next to the list or in ``root``, or else the videos' folder names.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DatasetError(f"annotation list {list_file} does not exist")
    root = Path(root) if root is not None else list_file.parent
    classes_file = None
    if classes is None:
        classes_file = _find_classes_file(list_file.parent, root)
        classes = read_classes_file(classes_file) if classes_file else None
    samples: list[Sample] = []
    missing: list[str] = []
    for n, rel, label_text in _parse_lines(list_file):
        try:
            label = int(label_text)
        except ValueError:
            raise DatasetError(f"{list_file}:{n}: label {label_text!r} is not an integer") from None
        if label < 0 or (classes is not None and label >= len(classes)):
            bound = f"{len(classes)} classes ({classes_file or 'given'})" if classes else "a label"
            raise DatasetError(f"{list_file}:{n}: label {label} is out of range for {bound}")
        path = root / rel
        if not path.is_file():
            missing.append(rel)
        samples.append(Sample(path, label))
    if missing:
        raise DatasetError(
            f"{list_file} names {len(missing)} missing file(s) under {root}: {first_few(missing)} "
            "(is the root folder right?)"
        )
    if not samples:
        raise DatasetError(f"annotation list {list_file} lists no videos")
    if classes is None:
        classes = _infer_classes(samples, root)
    if len(classes) < 2:
        raise DatasetError(f"{list_file} has only one class (label 0): a classifier needs at least two")
    return SampleList(root, list(classes), samples, str(list_file))


def resolve_split(root: str | os.PathLike, split: str = "train") -> SampleList:
    """The samples of ``split`` in a dataset folder, picking the layout automatically.

    In order: ``root/{split}.txt`` (annotation list, paths relative to ``root``), then class
    folders in ``root/{split}/``, then class folders in ``root`` itself (no split: every
    video). ``root`` may also be an annotation list file, whose folder is the root.
    """
    root = Path(root)
    if root.is_file():
        return load_annotation_list(root)
    if not root.is_dir():
        raise DatasetError(f"dataset {root} does not exist")
    if (root / f"{split}.txt").is_file():
        return load_annotation_list(root / f"{split}.txt", root)
    if (root / split).is_dir():
        split_root = root / split
        classes_file = _find_classes_file(split_root, root)
        return load_class_folders(split_root, read_classes_file(classes_file) if classes_file else None)
    log.info("%s has no %s.txt or %s/ folder: using every video in its class folders", root, split, split)
    return load_class_folders(root)
