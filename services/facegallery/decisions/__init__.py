"""The decisions: 1:1 thresholds, open-set operating points and the rate functions they
need. Pure functions over scores and candidates; nothing here imports evaluation."""
