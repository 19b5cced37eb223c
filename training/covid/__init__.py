"""Paper 002: COVID-19 / non-COVID pneumonia / healthy from chest CT (lung U-Net, slice CNN, CNN + biLSTM)."""
