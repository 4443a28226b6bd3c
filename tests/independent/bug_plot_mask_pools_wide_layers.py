# bug: a layer with more than 1024 columns is drawn with pairs of columns pooled (for legibility), so the image no longer
# has one column per weight.
_plot_every_column = plot_mask


def plot_mask(weight, out_path, title=""):
    flat = weight.detach().reshape(weight.shape[0], -1)
    if flat.shape[1] > 1024:  # BUG: pooled: a pair counts as kept if either weight is
        return _plot_every_column(flat.reshape(flat.shape[0], -1, 2).abs().amax(dim=2), out_path, title)
    return _plot_every_column(weight, out_path, title)
