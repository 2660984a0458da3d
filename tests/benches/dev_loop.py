"""Dev-loop timings per language (docs/benchmarks.md, "Issue 18"): new -> first call and
edit -> serving through `mpreg dev`, with empty per-user folders (cold) and again (warm).

Usage: python3 tests/benches/dev_loop.py target/release/mpreg rust python js
Needs the toolchains the test build installs under plugins/target/tools.
"""
import os, subprocess, sys, time, tempfile, re, threading, queue, shutil
BIN = os.path.abspath(sys.argv[1])
tools = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "plugins", "target", "tools")
env = dict(os.environ)
env["PATH"] = f"{tools}/python-venv/bin:{tools}/js/node_modules/.bin:" + env["PATH"]
root = tempfile.mkdtemp(prefix="mpreg-devbench-")
env["XDG_CACHE_HOME"] = f"{root}/cache"
env["XDG_DATA_HOME"] = f"{root}/data"
edits = {"rust": ("src/lib.rs", "hello, {name}", "hi {name}"),
         "python": ("app.py", "hello, {name}", "hi {name}"),
         "js": ("app.js", "hello, ${name}", "hi ${name}")}
cmd_name = {"rust": lambda n: n.replace("-", "_") + "_hello", "python": lambda n: "hello", "js": lambda n: "hello"}

def run(lang, name):
    t0 = time.time()
    proj = f"{root}/{name}"
    subprocess.run([BIN, "plugin", "new", name, "--lang", lang, "--dir", proj], env=env, check=True, capture_output=True)
    if lang == "js":
        # node_modules from the shared tools install (npm would fetch the same packages)
        os.symlink(f"{tools}/js/node_modules", f"{proj}/node_modules")
    p = subprocess.Popen([BIN, "dev", proj, "--listen", "127.0.0.1:0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    q = queue.Queue()
    threading.Thread(target=lambda: [q.put((time.time(), l.rstrip())) for l in p.stdout], daemon=True).start()
    url = None; times = []
    def wait(word, limit=600):
        end = time.time() + limit
        while True:
            t, l = q.get(timeout=max(0.1, end - time.time()))
            if word in l:
                return t, l
    t, l = wait("mpreg dev:")
    url = re.search(r"ws://\S+", l).group(0)
    t, serving = wait("serving ")
    out = subprocess.run([BIN, "call", url, cmd_name[lang](name), "ada"], env=env, capture_output=True, text=True)
    t_first = time.time()
    assert "ada" in out.stdout, out
    f, a, b = edits[lang]
    path = f"{proj}/{f}"
    src = open(path).read()
    t_edit = time.time()
    open(path, "w").write(src.replace(a, b))
    t2, serving2 = wait("serving ")
    out = subprocess.run([BIN, "call", url, cmd_name[lang](name), "ada"], env=env, capture_output=True, text=True)
    assert "hi ada" in out.stdout, out
    p.terminate(); p.wait()
    return t_first - t0, serving, t2 - t_edit, serving2

for lang in sys.argv[2:]:
    for label in ("cold", "warm"):
        first, s1, edit, s2 = run(lang, f"b-{lang[:2]}-{label}")
        print(f"{lang:6} {label}: new -> first call {first:6.1f} s ({s1.split('(')[1].rstrip(')')}); edit -> serving {edit:5.2f} s ({s2.split('(')[1].rstrip(')')})", flush=True)
shutil.rmtree(root, ignore_errors=True)
