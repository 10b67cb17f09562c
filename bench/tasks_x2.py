#!/usr/bin/env python3
"""bench/tasks_x2.py KHARD REPO DEST   (helper of bench/run.sh --tasks-x2)

Writes two playbooks with a copy of the cis_k3s role beside each:
  DEST/x1/playbook.yaml + DEST/x1/roles/cis_k3s   the role as built into KHARD
  DEST/x2/playbook.yaml + DEST/x2/roles/cis_k3s   the same, every task of
                                                  tasks/main.yaml twice, the
                                                  copy named "... (copy 2)"
The role copied is the one built into the binary: the working tree's
roles/cis_k3s and playbooks/cis-hardening.yaml if every file of them is
embedded byte for byte in KHARD, else the latest of the last 100 commits
touching them for which that holds (the repo may have moved on since the
binary was built). Prints where the role came from.
"""

import re
import subprocess
import sys
from pathlib import Path

ROLE = "roles/cis_k3s"
PLAYBOOK = "playbooks/cis-hardening.yaml"


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout


def worktree_files(repo):
    files = {PLAYBOOK: (repo / PLAYBOOK).read_bytes()}
    for p in sorted((repo / ROLE).rglob("*")):
        if p.is_file():
            files[str(p.relative_to(repo))] = p.read_bytes()
    return files


def rev_files(repo, rev):
    names = git(repo, "ls-tree", "-r", "--name-only", rev, "--", ROLE, PLAYBOOK).decode().split("\n")
    return {n: git(repo, "show", f"{rev}:{n}") for n in names if n}


def doubled(text):
    lines = text.splitlines(keepends=True)
    head, blocks = [], []
    for line in lines:
        if line.startswith("- "):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
        else:
            head.append(line)
    out = list(head)
    for i, b in enumerate(blocks):
        if not b[-1].endswith("\n"):
            b[-1] += "\n"
        out += b
        copy = list(b)
        m = re.match(r"- name: (.*?)\s*$", copy[0])
        if m:
            copy[0] = f"- name: {m.group(1)} (copy 2)\n"
        else:
            copy[0] = "  " + copy[0][2:]
            copy.insert(0, f"- name: task {i + 1} (copy 2)\n")
        out += copy
    return "".join(out), len(blocks)


def main():
    khard, repo, dest = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    binary = khard.read_bytes()
    candidates = [("the working tree", lambda: worktree_files(repo))]
    revs = git(repo, "rev-list", "-n", "100", "HEAD", "--", ROLE, PLAYBOOK).decode().split()
    candidates += [(f"commit {r[:10]}", lambda r=r: rev_files(repo, r)) for r in revs]
    for where, get in candidates:
        files = get()
        if files and all(content in binary for content in files.values()):
            break
    else:
        sys.exit(f"bench: the cis_k3s role built into {khard} matches neither the working tree nor "
                 f"the last {len(revs)} commits touching it")
    for v in ("x1", "x2"):
        for name, content in files.items():
            out = dest / v / ("playbook.yaml" if name == PLAYBOOK else name)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(content)
    tasks = files[f"{ROLE}/tasks/main.yaml"].decode()
    text, n = doubled(tasks)
    (dest / "x2" / ROLE / "tasks" / "main.yaml").write_text(text)
    print(f"{where}, {n} tasks -> {2 * n}")


if __name__ == "__main__":
    main()
