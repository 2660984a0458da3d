"""pystats: an MPREG plugin in Python, built with componentize-py.

Build:  componentize-py -d wit -w pystats componentize app -o pystats.wasm
"""

import json
import statistics

import wit_world
from wit_world import Summary
from wit_world import exports
from wit_world.imports import call, log, types
from componentize_py_types import Err

VERSION = "1.0.0"


class WitWorld(wit_world.WitWorld):
    def mean(self, xs):
        if not xs:
            raise Err("mean of an empty list")
        return statistics.fmean(xs)

    def summarize(self, xs):
        if not xs:
            raise Err("summary of an empty list")
        stdev = statistics.stdev(xs) if len(xs) > 1 else None
        return Summary(
            count=len(xs),
            mean=statistics.fmean(xs),
            median=float(statistics.median(xs)),
            stdev=stdev,
        )

    def shout(self, s, times):
        return " ".join([s.title()] * times)

    def add_via_node(self, a, b):
        log.log(log.Level.DEBUG, f"asking the node for add({a}, {b})")
        try:
            out = call.call("add", json.dumps([a, b]), call.CallOptions(None, None, [], None))
        except Err as e:
            raise Err(f"add failed: {e.value}")
        return json.loads(out)


def command(name, export, description):
    return types.Command(
        name=name,
        export_name=export,
        function_id=f"pystats.{name}",
        resources=[],
        description=description,
    )


class Metadata(exports.Metadata):
    def describe(self):
        return types.Manifest(
            name="pystats",
            version=VERSION,
            resources=["python"],
            commands=[
                command("py_mean", "mean", "mean of a list of numbers (Python)"),
                command("py_summarize", "summarize", "count, mean, median, stdev (Python)"),
                command("py_shout", "shout", "title-cased repetition (Python)"),
                command("py_add_via_node", "add-via-node", "add through the node (Python)"),
            ],
        )
