"""What every extractor produces: one text and the heading sections it is cut into.

The chunker never crosses a section boundary, so a chunk's heading path is exact.
Offsets index :attr:`ExtractedDocument.text`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Section:
    """A run of body text ``text[start:end]`` under one heading path."""

    heading_path: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ExtractedDocument:
    """The text of one document and the heading sections it is made of."""

    title: str
    text: str
    sections: tuple[Section, ...]
    media_type: str


class SectionBuilder:
    """Collects sections while a heading stack tracks the current heading path."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.stack: list[tuple[int, str]] = []
        self.start = 0

    def heading(self, level: int, title: str, heading_start: int, body_start: int) -> None:
        self.close(heading_start)
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        if title:
            self.stack.append((level, title))
        self.start = body_start

    def close(self, end: int) -> None:
        if end > self.start:
            path = tuple(title for _, title in self.stack)
            self.sections.append(Section(path, self.start, end))
        self.start = end
