class Checkout {
    boolean v2(Client client) {
        return client.getBooleanValue("checkout-v2", false);
    }
    String theme(Client c) { return c.getStringDetails("theme", "light").getValue(); }
}
