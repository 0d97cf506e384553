"""Documents for the retrieval tests: PDFs built in memory and Markdown manuals."""

from __future__ import annotations

import zlib
from collections.abc import Sequence


def make_pdf(pages: Sequence[str]) -> bytes:
    """A minimal valid PDF (Helvetica, one text line per input line) that pypdf reads."""

    def escape(line: str) -> str:
        return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objects: dict[int, bytes] = {}
    page_ids = [4 + 2 * i for i in range(len(pages))]
    kids = " ".join(f"{p} 0 R" for p in page_ids)
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[2] = f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode()
    objects[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    for page_id, text in zip(page_ids, pages, strict=True):
        operations = ["BT", "/F1 11 Tf", "14 TL", "72 760 Td"]
        operations += [f"({escape(line)}) Tj T*" for line in text.split("\n")]
        stream = "\n".join([*operations, "ET"]).encode("latin-1")
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (page_id + 1)
        )
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    out = bytearray(b"%PDF-1.4\n")
    offsets: dict[int, int] = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref, size = len(out), max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[n] for n in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


# --- PDF builders ---------------------------------------------------------------------


def build_pdf(objects: dict[int, bytes]) -> bytes:
    """A PDF file of numbered objects (1 must be the catalog) with a correct xref."""
    out = bytearray(b"%PDF-1.4\n")
    offsets: dict[int, int] = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref, size = len(out), max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets.get(n, 0) for n in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


def flate_stream(data: bytes, extra: bytes = b"") -> bytes:
    packed = zlib.compress(data, 9)
    return b"<< /Length %d /Filter /FlateDecode %s >>\nstream\n%s\nendstream" % (
        len(packed),
        extra,
        packed,
    )


FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def one_page_pdf(
    content: bytes, xobjects: bytes = b"", extra: dict[int, bytes] | None = None
) -> bytes:
    """One page whose content stream (FlateDecode) is ``content``; objects 1-5 are
    taken, ``extra`` adds more (e.g. form XObjects named in ``xobjects``)."""
    resources = b"<< /Font << /F1 3 0 R >> /XObject << %s >> >>" % xobjects
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        3: FONT,
        4: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources %s "
        b"/Contents 5 0 R >>" % resources,
        5: flate_stream(content),
        **(extra or {}),
    }
    return build_pdf(objects)


ROUTER_MANUAL = """# Acme Router Manual

## Installation

Unpack the router, connect the power cable and plug the uplink cable into the WAN port.
The status light turns green after about a minute.

## Resetting the admin password

If you forgot the admin password, hold the recessed reset button on the back for ten
seconds while the router is powered on. The password returns to the factory default
printed on the label under the router.

## Firmware updates

Firmware updates are downloaded from the vendor portal and uploaded on the maintenance page.
"""

BILLING_FAQ = """# Billing FAQ

## Invoices

Invoices are emailed on the first day of each month and can be downloaded as PDF files.

## Refunds

Refunds are issued to the original payment card within five business days.
"""
