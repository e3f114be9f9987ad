"""A Volume shared by two functions: one writes and commits, the other sees the change once it reloads.

Run it with `onshore run examples/volume_notes.py` (or `modal run` against an Onshore server).
"""

import pathlib

import modal

app = modal.App("example-volume-notes")
notes = modal.Volume.from_name("example-volume-notes", create_if_missing=True)
NOTE = pathlib.Path("/notes/note.txt")


@app.function(volumes={"/notes": notes})
def write(text: str) -> None:
    NOTE.write_text(text)
    notes.commit()  # publish the change to containers that reload, and to later ones


@app.function(volumes={"/notes": notes})
def read(reload: bool) -> str:
    if reload:
        notes.reload()  # see the latest commit; without it, the volume stays as this container first saw it
    return NOTE.read_text() if NOTE.exists() else "(no note yet)"


@app.local_entrypoint()
def main() -> None:
    write.remote("first note")
    print("reader sees:", read.remote(reload=False))
    write.remote("second note")
    print("same reader, no reload:", read.remote(reload=False))
    print("after reload:", read.remote(reload=True))
    files = [entry.path for entry in notes.listdir("/")]
    print("files in the volume:", files)
