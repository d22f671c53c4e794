/*
 * The intrusive list of base/common.h, as the directory's queues use it:
 * FIFO and LIFO order, popping, taking a queue whole (splice), unlinking
 * while walking, and sorted insertion that keeps equal keys in arrival order
 * whether the new node goes last (the usual case) or further in.
 */
#include "../../base/common.h"
#include "harness.h"

struct item {
    struct fg_list link;
    int key, id;
};

static bool item_before(const struct fg_list *a, const struct fg_list *b)
{
    return FG_CONTAINER_OF(a, struct item, link)->key < FG_CONTAINER_OF(b, struct item, link)->key;
}

/* The ids on the list, in order, as a string of digits. */
static const char *ids(const struct fg_list *head)
{
    static char s[64];
    size_t n = 0;
    const struct fg_list *p;
    fg_list_for_each(p, head) {
        if (n + 1 < sizeof s)
            s[n++] = (char)('0' + FG_CONTAINER_OF(p, struct item, link)->id);
    }
    s[n] = 0;
    return s;
}

static void test_order(void)
{
    struct item it[5];
    struct fg_list q;
    fg_list_init(&q);
    CHECK(fg_list_empty(&q));
    CHECK(fg_list_first(&q) == NULL && fg_list_pop(&q) == NULL);
    CHECK(FG_LIST_FIRST(&q, struct item, link) == NULL);
    for (int i = 0; i < 5; i++) {
        it[i].id = i;
        fg_list_add_tail(&q, &it[i].link);
    }
    CHECK(strcmp(ids(&q), "01234") == 0);
    CHECK(FG_LIST_FIRST(&q, struct item, link) == &it[0]);
    CHECK(fg_list_pop(&q) == &it[0].link);
    CHECK(it[0].link.next == &it[0].link); /* a popped node points to itself */
    fg_list_del(&it[0].link);              /* so deleting it again is harmless */
    fg_list_del(&it[2].link);
    CHECK(strcmp(ids(&q), "134") == 0);
    fg_list_add_head(&q, &it[2].link);
    CHECK(strcmp(ids(&q), "2134") == 0);
    fg_list_add_after(&it[1].link, &it[0].link);
    CHECK(strcmp(ids(&q), "21034") == 0);
}

static void test_splice(void)
{
    struct item it[6];
    struct fg_list shared, batch;
    fg_list_init(&shared);
    fg_list_init(&batch);
    fg_list_splice_tail(&batch, &shared); /* empty into empty */
    CHECK(fg_list_empty(&batch) && fg_list_empty(&shared));
    for (int i = 0; i < 6; i++) {
        it[i].id = i;
        fg_list_add_tail(i < 2 ? &batch : &shared, &it[i].link);
    }
    fg_list_splice_tail(&batch, &shared);
    CHECK(fg_list_empty(&shared));
    CHECK(strcmp(ids(&batch), "012345") == 0);
    /* Both directions stay linked: walk back from the tail. */
    CHECK(batch.prev == &it[5].link && it[2].link.prev == &it[1].link);
    /* The emptied queue takes new nodes again. */
    struct item late = {.id = 9};
    fg_list_add_tail(&shared, &late.link);
    CHECK(strcmp(ids(&shared), "9") == 0);
    /* Unlinking every other node while walking. */
    struct fg_list *p, *tmp;
    fg_list_for_each_safe(p, tmp, &batch) {
        if (FG_CONTAINER_OF(p, struct item, link)->id % 2)
            fg_list_del(p);
    }
    CHECK(strcmp(ids(&batch), "024") == 0);
}

static void test_sorted(void)
{
    /* Keys in arrival order; equal keys must keep it. */
    static const int keys[] = {10, 20, 20, 5, 30, 20, 5, 40};
    struct item it[FG_ARRAY_SIZE(keys)];
    struct fg_list l;
    fg_list_init(&l);
    for (size_t i = 0; i < FG_ARRAY_SIZE(keys); i++) {
        it[i].key = keys[i];
        it[i].id = (int)i;
        fg_list_add_sorted(&l, &it[i].link, item_before);
    }
    CHECK(strcmp(ids(&l), "36012547") == 0);
    int prev = -1, bad = 0;
    const struct fg_list *p;
    fg_list_for_each(p, &l) {
        int k = FG_CONTAINER_OF(p, struct item, link)->key;
        bad += k < prev;
        prev = k;
    }
    CHECK_INT(bad, 0);
}

int main(void)
{
    test_order();
    test_splice();
    test_sorted();
    return th_finish("test_list");
}
