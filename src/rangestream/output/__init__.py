"""Where downloaded bytes go, with nothing about the terminal: the spans known to be in FILE.part,
its sidecar (read, validated, replaced atomically), the part file itself (opened without following
symlinks, locked, renamed when complete), safe file names and output templates, the download
archive (appended under a lock), and the in-order writer for stdout, devices and FIFOs.

Everything here treats the directory as possibly shared with someone hostile and the sidecar as
possibly tampered with: FILE.part is never opened through a symlink, the sidecar is replaced
through a fresh temporary file, and nothing a sidecar says is used before it is validated.
"""

from .archive import DownloadArchive
from .errors import LocalIOError, human_bytes, local_io_error
from .names import default_output_name, is_template, name_max, render_template, safe_file_name
from .ordered import StdoutWriter, is_stream_target, open_stream_target, silence_stdout
from .partfile import CHECKPOINT_EVERY, PartFile, open_locked, open_part_fd, refuse_unsafe_part, sha256_file
from .sidecar import (
    MAX_SIDECAR_BYTES,
    MAX_SIDECAR_SPANS,
    SIDECAR_SUFFIX,
    SIDECAR_VERSION,
    SidecarInvalid,
    SidecarState,
    read_sidecar,
    url_identity,
    write_file_atomically,
)
from .spans import Spans

__all__ = [
    "CHECKPOINT_EVERY",
    "MAX_SIDECAR_BYTES",
    "MAX_SIDECAR_SPANS",
    "SIDECAR_SUFFIX",
    "SIDECAR_VERSION",
    "DownloadArchive",
    "LocalIOError",
    "PartFile",
    "SidecarInvalid",
    "SidecarState",
    "Spans",
    "StdoutWriter",
    "default_output_name",
    "human_bytes",
    "is_stream_target",
    "is_template",
    "local_io_error",
    "name_max",
    "open_locked",
    "open_part_fd",
    "open_stream_target",
    "read_sidecar",
    "refuse_unsafe_part",
    "render_template",
    "safe_file_name",
    "sha256_file",
    "silence_stdout",
    "url_identity",
    "write_file_atomically",
]
