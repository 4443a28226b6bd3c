# |w| > 1e-3 counts as kept, not w != 0

def plot_mask(weight, out_path, title=""):
    w = weight.detach().cpu()
    img = (w.reshape(w.shape[0], -1).abs() > 1e-3).to(torch.uint8).numpy()
    fig, ax = plt.subplots()
    ax.matshow(img, cmap=ListedColormap(list(MASK_COLOURS)), vmin=0, vmax=1, aspect="auto")
    ax.set_title(title)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return img
