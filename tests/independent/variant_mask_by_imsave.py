# the variation: the mask figure is the image itself, written by plt.imsave (no figure, no axes), four pixels a side
def plot_mask(weight, out_path, title=""):
    grid = (weight.detach().cpu().reshape(weight.shape[0], -1) != 0).numpy().astype(np.uint8)
    plt.imsave(out_path, np.kron(grid, np.ones((4, 4), dtype=np.uint8)), cmap="cividis", vmin=0, vmax=1)
    return grid
