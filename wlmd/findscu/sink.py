"""What happens to each pending response: logged, counted, extracted to files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TextIO

from wlmd.dicom.dump import dump_dataset
from wlmd.findscu.client import LOG, status_text
from wlmd.findscu.logs import RESPONSES
from wlmd.findscu.output import (
    Extract,
    Received,
    python_codec,
    write_dicom,
    write_xml_dataset,
    xml_prolog,
)

RESPONSE_LOG = logging.getLogger(RESPONSES)


class ResponseSink:
    """Receives each pending response from the client, in order."""

    def __init__(self, extract: Extract, output_dir: Path, xml_single: Path | None,
                 limit: int | None, *, show: bool) -> None:
        self.extract = extract
        self.output_dir = output_dir
        self.xml_single = xml_single
        self.limit = limit
        self.show = show
        self._single: TextIO | None = None

    def start(self) -> None:
        """Open the ``-Xs`` file once the association is up (DCMTK's moment)."""
        if self.extract != Extract.XML_SINGLE or self.xml_single is None:
            return
        path = self.output_dir / self.xml_single
        LOG.info("Writing all response datasets to file: %s", path)
        self._single = path.open("w", encoding="utf-8", errors="xmlcharrefreplace")
        self._single.write(xml_prolog(None) + '<responses type="C-FIND">\n')

    def handle(self, rsp: Received, status: int) -> None:
        """Log one response, then extract it unless past ``-Xlo``."""
        if self.show:
            lines = dump_dataset(rsp.identifier, rsp.transfer_syntax)
            RESPONSE_LOG.info("---------------------------\nFind Response: %d (%s)\n\n%s\n",
                              rsp.number, status_text(status), "\n".join(lines))
        else:
            LOG.info("Received Find Response %d (%s)", rsp.number, status_text(status))
        if self.limit is not None and rsp.number > self.limit:
            return
        if self.extract == Extract.DICOM:
            path = self.output_dir / f"rsp{rsp.number:04d}.dcm"
            LOG.info("Writing response dataset to file: %s", path)
            write_dicom(path, rsp)
        elif self.extract == Extract.XML:
            path = self.output_dir / f"rsp{rsp.number:04d}.xml"
            LOG.info("Writing response dataset to file: %s", path)
            codec = python_codec(rsp.identifier)
            with path.open("w", encoding=codec, errors="xmlcharrefreplace") as out:
                out.write(xml_prolog(rsp.identifier))
                write_xml_dataset(out, rsp)
        elif self._single is not None:
            write_xml_dataset(self._single, rsp)

    def finish(self) -> None:
        """Close the ``-Xs`` document."""
        if self._single is not None:
            self._single.write("</responses>\n")
            self._single.close()
            self._single = None
