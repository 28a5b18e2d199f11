"""What the model might run in the container: read the mirrored data."""

import csv

with open("/mnt/data/data/measurements.csv", newline="") as handle:
    values = [float(row["value"]) for row in csv.DictReader(handle)]
print(f"{len(values)} values, mean {sum(values) / len(values):.2f}")
