"""The part of the `clearml` package that clearml-serving's example `preprocess.py` files import,
for workers whose interpreter has no clearml: `StorageManager.get_local_copy`. serval puts this
folder at the *end* of `sys.path`, so an installed clearml always wins."""

import hashlib
import os
import shutil
import tempfile
import urllib.parse
import urllib.request

__all__ = ["StorageManager"]


class StorageManager:
    """Local copies of remote files (http, https and file URLs, and local paths)."""

    @classmethod
    def get_local_copy(cls, remote_url, cache_context=None, extract_archive=True, name=None, force_download=False):
        parsed = urllib.parse.urlparse(str(remote_url))
        if parsed.scheme in ("", "file"):
            path = urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else str(remote_url)
            return path if os.path.exists(path) else None
        if parsed.scheme not in ("http", "https"):
            raise ValueError(
                "StorageManager.get_local_copy in serval fetches http(s) and file URLs; "
                "install clearml in the worker's interpreter for %s://" % parsed.scheme
            )
        folder = os.path.join(tempfile.gettempdir(), "serval-storage-manager")
        os.makedirs(folder, exist_ok=True)
        suffix = os.path.splitext(parsed.path)[1]
        target = os.path.join(folder, hashlib.sha256(str(remote_url).encode()).hexdigest()[:32] + suffix)
        if force_download or not os.path.exists(target):
            staging = "%s.%d.tmp" % (target, os.getpid())
            with urllib.request.urlopen(str(remote_url), timeout=60) as response, open(staging, "wb") as out:
                shutil.copyfileobj(response, out)
            os.replace(staging, target)
        return target
