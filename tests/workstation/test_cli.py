"""``medws users add`` and ``medws workstation --open UID --screenshot FILE``."""
from __future__ import annotations

import io

import numpy as np
from PySide6.QtGui import QImage

from medws.cli import main
from workstation.core.users import UserStore


def test_users_add_and_list(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["users", "add", "drlee", "--role", "radiologist", "--display-name", "Lee^Minho",
                 "--root", str(tmp_path), "--password-stdin"]) == 0
    assert UserStore.for_root(tmp_path).verify("drlee", "a-long-password").display_name == "Lee^Minho"
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["users", "add", "drlee", "--role", "radiologist", "--root", str(tmp_path), "--password-stdin"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["users", "list", "--root", str(tmp_path)]) == 0
    assert "drlee\tradiologist" in capsys.readouterr().out


def test_screenshot_of_reading_screen(qapp, demo_root, tmp_path):
    root, studies = demo_root
    out = tmp_path / "shot.png"
    assert main(["workstation", "--root", str(root), "--open", studies.chest_uid, "--screenshot", str(out)]) == 0
    img = QImage(str(out))
    assert img.width() >= 1200 and img.height() >= 800
    # the image area is not blank and the findings' colours are painted
    g = img.convertToFormat(QImage.Format.Format_RGB888)
    arr = np.frombuffer(g.constBits(), np.uint8, g.bytesPerLine() * g.height()).reshape(g.height(), -1)
    assert arr.std() > 10
    assert main(["workstation", "--root", str(root), "--open", "1.2.3.999", "--screenshot",
                 str(tmp_path / "none.png")]) == 1
