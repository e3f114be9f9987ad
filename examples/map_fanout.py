"""Map fan-out: spread many inputs over containers with .map, .starmap and .for_each.

Run it with `onshore run examples/map_fanout.py`.
"""

import modal

app = modal.App("example-map-fanout")


@app.function()
def word_length(word: str) -> int:
    return len(word)


@app.function()
def power(base: int, exponent: int) -> int:
    return base**exponent


@app.function()
def shout(word: str) -> None:
    # .for_each runs for the side effect: this line shows up in your terminal.
    print(word.upper())


@app.local_entrypoint()
def main() -> None:
    words = "onshore runs modal apps on your own machines".split()
    # Results come back in input order, whichever container finished first.
    print("lengths:", list(word_length.map(words)))
    # .starmap unpacks each tuple into arguments.
    print("powers:", list(power.starmap([(2, 10), (3, 4), (10, 3)])))
    shout.for_each(words[:3])
    print("total characters:", sum(word_length.map(words)))
