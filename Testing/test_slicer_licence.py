"""What the Extensions Index and a user are told about licences: the code's and the shipped weights'.

* a top-level LICENSE holds the Apache-2.0 text; the extension's CMake metadata has no OWNER placeholder
  and its description names the weights' licences;
* the panel names the licence of the weights that would run (Qt-free ``licenceNote``), the module's
  acknowledgement names the non-commercial licence of the MRI weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from slicer_harness import MODULE_DIR, REPO_ROOT


def test_the_code_licence_is_at_the_top_level():
    text = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "9. Accepting Warranty or Additional Liability." in text and "END OF TERMS AND CONDITIONS" in text


def test_the_extension_metadata_has_no_owner_placeholder_and_names_the_weights_licences():
    text = (REPO_ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "OWNER" not in text
    description = re.search(r'set\(EXTENSION_DESCRIPTION "([^"]+)"\)', text).group(1)
    assert "Apache-2.0" in description and "CC BY-NC-SA 4.0 (non-commercial use only)" in description
    assert re.search(r'set\(EXTENSION_ICONURL "\$\{LIVERUNET_PUBLIC_URL\}/raw/main/LiverUNet/Resources/Icons/'
                     r'LiverUNet.png"\)', text)
    assert (MODULE_DIR / "Resources" / "Icons" / "LiverUNet.png").is_file()


def test_the_module_and_the_effect_name_the_non_commercial_licence():
    module = (MODULE_DIR / "LiverUNet.py").read_text(encoding="utf-8")
    acknowledgement = module[module.index("acknowledgementText"):module.index("slicer.app.connect")]
    assert "CC BY-NC-SA 4.0" in acknowledgement and "non-commercial" in acknowledgement
    effect = (MODULE_DIR / "SegmentEditorLiverUNetLib" / "SegmentEditorEffect.py").read_text(encoding="utf-8")
    assert "CC BY-NC-SA 4.0" in effect and "non-commercial use only" in effect
    panel = (MODULE_DIR / "LiverUNetGuiLib" / "segment_panel.py").read_text(encoding="utf-8")
    assert "self.ui.modelLicenceLabel.text = licenceNote(" in panel


def test_the_licence_note_follows_the_selected_model(tmp_path):
    from LiverUNetSlicerLib.models import ModelEntry, licenceNote, writeProvenance

    shipped = {"ct": tmp_path / "liver_ct_default.pt", "mri": tmp_path / "liver_mri_t2_default.pt"}
    automatic = licenceNote(ModelEntry("Shipped model for the image (CT or MRI)", None), shipped)
    assert "MRI: CC BY-NC-SA 4.0, non-commercial use only" in automatic and "CT: CC BY 4.0" in automatic
    assert "CT:" not in licenceNote(ModelEntry("auto", None), {"mri": shipped["mri"]})
    assert "non-commercial" in licenceNote(ModelEntry("Shipped MRI liver model", shipped["mri"]), shipped)
    assert licenceNote(ModelEntry("Shipped CT liver model", shipped["ct"]), shipped) == \
        "Licence of these weights: CC BY 4.0 (trained on BTCV CT)."
    fineTuned, scratch = tmp_path / "tuned.pt", tmp_path / "scratch.pt"
    writeProvenance(fineTuned, {"initial_model": "shipped"})
    writeProvenance(scratch, {"initial_model": None})
    assert "non-commercial" in licenceNote(ModelEntry("tuned", fineTuned), shipped)
    assert licenceNote(ModelEntry("scratch", scratch), shipped) == ""
    assert "fine-tuned" in licenceNote(ModelEntry("imported", tmp_path / "no_provenance.pt"), shipped)
    assert licenceNote(None, shipped) == ""
    assert json.loads(Path(fineTuned.with_suffix(".provenance.json")).read_text())["initial_model"] == "shipped"
