"""Twelve short chest X-ray reports with their labels: the training data of the tests that train the
tiny model in other processes (DDP, kill -9 resume)."""

TEXTS = [
    ("Heart size is enlarged. Lungs are clear.", ["Cardiomegaly"]),
    ("Small left pleural effusion.", ["Pleural Effusion"]),
    ("No acute cardiopulmonary abnormality.", ["No Finding"]),
    ("Right lower lobe opacity concerning for pneumonia.", ["Lung Opacity", "Pneumonia"]),
    ("Mild pulmonary edema and cardiomegaly.", ["Cardiomegaly", "Edema"]),
    ("Calcified granuloma in the left upper lobe.", ["Granuloma"]),
    ("Small right apical pneumothorax.", ["Pneumothorax"]),
    ("Hyperinflated lungs consistent with emphysema.", ["Emphysema or COPD"]),
    ("Old healed left rib fracture.", ["Fracture"]),
    ("Bibasilar atelectasis.", ["Atelectasis"]),
    ("Spiculated nodule in the right upper lobe. ET tube in place.", ["Nodule or Mass", "Support Devices"]),
    ("Patchy consolidation at the left base.", ["Consolidation"]),
]
