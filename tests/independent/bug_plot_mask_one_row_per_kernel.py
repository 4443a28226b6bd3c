def plot_mask(weight, out_path, title=""):
    image = weight.detach().cpu().reshape(-1, weight.shape[-1]).bool().float()  # one row per kernel row
    plt.figure()
    plt.imshow(image.numpy(), cmap="Greys_r")
    plt.title(title)
    plt.savefig(out_path)
    plt.close()
    return image
