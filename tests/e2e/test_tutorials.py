"""Issue #3, scenarios 1 and 2: the TFLite and OpenVINO tutorials, as written, on a real kuiperd
(the checks are tests/support/tutorials.py, which test_zz_install.py also runs on its own install)."""

from tests.support.tutorials import openvino_tutorial_marks_defects, tflite_tutorial_labels_cat_frames


def test_tflite_tutorial_labels_cat_frames(kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub):
    tflite_tutorial_labels_cat_frames(kuiperd, kuiper, mosquitto, mqtt_pub, mqtt_sub)


def test_openvino_tutorial_marks_defects(kuiperd, kuiper, defect_plugin, mosquitto, mqtt_pub, mqtt_sub):
    openvino_tutorial_marks_defects(kuiperd, kuiper, mosquitto, mqtt_pub, mqtt_sub)
