"""Drawing for people: charts as data drawn to SVG (`svg`) or PNG (`png`), and the batch
report (`report`)."""
