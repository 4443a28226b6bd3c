# bug: both figures are saved as soon as their axes exist and drawn afterwards, so each PNG shows empty axes
from matplotlib.colors import ListedColormap


def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title=""):
    fig, ax = plt.subplots()
    ax.set(title=title, xlabel="sparsity", ylabel="test accuracy (%)")
    fig.savefig(out_path)  # BUG: saved before anything is drawn
    drawn = []
    for r in records:
        ax.scatter([r["sparsity"]], [r["accuracy"]], label=r["label"])
        drawn.append((r["label"], r["sparsity"], r["accuracy"]))
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, linestyle="--", label="dense")
    plt.close(fig)
    return drawn


def plot_mask(weight, out_path, title=""):
    grid = (weight.detach().cpu().reshape(weight.shape[0], -1) != 0).numpy().astype(np.uint8)
    fig, ax = plt.subplots()
    ax.set_title(title)
    fig.savefig(out_path)  # BUG: saved before the image is drawn
    ax.imshow(grid, cmap=ListedColormap(["#E69F00", "#0072B2"]), vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    plt.close(fig)
    return grid
