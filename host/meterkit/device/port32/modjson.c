// `json`: a test-only STAND-IN for extmod's json (not in the sdist). dumps/dump print with the core's own
// JSON printers (PRINT_JSON in py/obj*.c, the code a board runs); loads/load are a small parser written for
// this port: objects, arrays, strings with escapes, integers (big ones too), floats, true/false/null.

#include <string.h>

#include "py/stackctrl.h"
#include "py/objstr.h"
#include "py/parsenum.h"
#include "py/runtime.h"
#include "mp32port.h"
#include "py/stream.h"

// -- dumps / dump ---------------------------------------------------------------------------------------------

static void print_json(const mp_print_t *out, mp_obj_t obj, mp_obj_t separators) {
    mp_print_ext_t p = {*out, ", ", ": "};
    if (separators != mp_const_none) {
        mp_obj_t *items;
        mp_obj_get_array_fixed_n(separators, 2, &items);
        p.item_separator = mp_obj_str_get_str(items[0]);
        p.key_separator = mp_obj_str_get_str(items[1]);
    }
    mp_obj_print_helper(&p.base, obj, PRINT_JSON);
}

static mp_obj_t json_dumps(size_t n_args, const mp_obj_t *args, mp_map_t *kw) {
    mp_map_elem_t *sep = mp_map_lookup(kw, MP_OBJ_NEW_QSTR(MP_QSTR_separators), MP_MAP_LOOKUP);
    vstr_t v;
    mp_print_t out;
    vstr_init_print(&v, 64, &out);
    print_json(&out, args[0], sep ? sep->value : mp_const_none);
    return mp_obj_new_str_from_utf8_vstr(&v);
}
static MP_DEFINE_CONST_FUN_OBJ_KW(json_dumps_obj, 1, json_dumps);

static mp_obj_t json_dump(size_t n_args, const mp_obj_t *args, mp_map_t *kw) {
    mp_map_elem_t *sep = mp_map_lookup(kw, MP_OBJ_NEW_QSTR(MP_QSTR_separators), MP_MAP_LOOKUP);
    mp_get_stream_raise(args[1], MP_STREAM_OP_WRITE);
    mp_print_t out = {MP_OBJ_TO_PTR(args[1]), mp_stream_write_adaptor};
    print_json(&out, args[0], sep ? sep->value : mp_const_none);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_KW(json_dump_obj, 2, json_dump);

// -- loads / load ---------------------------------------------------------------------------------------------

typedef struct _parser_t {
    const char *s;
    const char *end;
} parser_t;

static MP_NORETURN void syntax_error(void) {
    mp_raise_ValueError(MP_ERROR_TEXT("syntax error in JSON"));
}

static void skip_ws(parser_t *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) {
        p->s++;
    }
}

static char peek(parser_t *p) {
    skip_ws(p);
    return p->s < p->end ? *p->s : 0;
}

static void expect(parser_t *p, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, word, n) != 0) {
        syntax_error();
    }
    p->s += n;
}

static unsigned hex4(parser_t *p) {
    if (p->end - p->s < 4) {
        syntax_error();
    }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *p->s++;
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= c - '0';
        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            v |= (c | 0x20) - 'a' + 10;
        } else {
            syntax_error();
        }
    }
    return v;
}

static mp_obj_t parse_string(parser_t *p) {
    p->s++;  // the opening quote
    vstr_t v;
    vstr_init(&v, 16);
    for (;;) {
        if (p->s >= p->end) {
            syntax_error();
        }
        char c = *p->s++;
        if (c == '"') {
            break;
        }
        if (c != '\\') {
            vstr_add_byte(&v, c);
            continue;
        }
        if (p->s >= p->end) {
            syntax_error();
        }
        c = *p->s++;
        switch (c) {
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case '"':
            case '\\':
            case '/':
                break;
            case 'u': {
                unsigned u = hex4(p);
                if (u >= 0xd800 && u < 0xdc00 && p->end - p->s >= 6 && p->s[0] == '\\' && p->s[1] == 'u') {
                    p->s += 2;
                    u = 0x10000 + ((u - 0xd800) << 10) + (hex4(p) - 0xdc00);  // a surrogate pair
                }
                vstr_add_char(&v, u);
                continue;
            }
            default:
                syntax_error();
        }
        vstr_add_byte(&v, c);
    }
    return mp_obj_new_str_from_utf8_vstr(&v);
}

static mp_obj_t parse_number(parser_t *p) {
    const char *start = p->s;
    bool is_float = false;
    while (p->s < p->end) {
        char c = *p->s;
        if (c == '.' || c == 'e' || c == 'E') {
            is_float = true;
        } else if (!(c == '-' || c == '+' || (c >= '0' && c <= '9'))) {
            break;
        }
        p->s++;
    }
    if (is_float) {
        return mp_parse_num_float(start, p->s - start, false, NULL);
    }
    return mp_parse_num_integer(start, p->s - start, 10, NULL);
}

static mp_obj_t parse_value(parser_t *p) {
    MP_STACK_CHECK();
    char c = peek(p);
    if (c == '{') {
        p->s++;
        mp_obj_t d = mp_obj_new_dict(0);
        if (peek(p) == '}') {
            p->s++;
            return d;
        }
        for (;;) {
            if (peek(p) != '"') {
                syntax_error();
            }
            mp_obj_t key = parse_string(p);
            if (peek(p) != ':') {
                syntax_error();
            }
            p->s++;
            mp_obj_dict_store(d, key, parse_value(p));
            c = peek(p);
            p->s++;
            if (c == '}') {
                return d;
            }
            if (c != ',') {
                syntax_error();
            }
        }
    }
    if (c == '[') {
        p->s++;
        mp_obj_t list = mp_obj_new_list(0, NULL);
        if (peek(p) == ']') {
            p->s++;
            return list;
        }
        for (;;) {
            mp_obj_list_append(list, parse_value(p));
            c = peek(p);
            p->s++;
            if (c == ']') {
                return list;
            }
            if (c != ',') {
                syntax_error();
            }
        }
    }
    if (c == '"') {
        return parse_string(p);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        return parse_number(p);
    }
    if (c == 't') {
        expect(p, "true");
        return mp_const_true;
    }
    if (c == 'f') {
        expect(p, "false");
        return mp_const_false;
    }
    if (c == 'n') {
        expect(p, "null");
        return mp_const_none;
    }
    syntax_error();
}

static mp_obj_t json_loads(mp_obj_t text) {
    mp_buffer_info_t b;
    mp_get_buffer_raise(text, &b, MP_BUFFER_READ);
    parser_t p = {b.buf, (const char *)b.buf + b.len};
    mp_obj_t v = parse_value(&p);
    if (peek(&p) != 0) {
        syntax_error();  // something after the value
    }
    return v;
}
static MP_DEFINE_CONST_FUN_OBJ_1(json_loads_obj, json_loads);

static mp_obj_t json_load(mp_obj_t stream) {
    mp_obj_t read = mp_load_attr(stream, MP_QSTR_read);
    return json_loads(mp_call_function_0(read));
}
static MP_DEFINE_CONST_FUN_OBJ_1(json_load_obj, json_load);

static const mp_rom_map_elem_t json_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_json) },
    { MP_ROM_QSTR(MP_QSTR_dumps), MP_ROM_PTR(&json_dumps_obj) },
    { MP_ROM_QSTR(MP_QSTR_dump), MP_ROM_PTR(&json_dump_obj) },
    { MP_ROM_QSTR(MP_QSTR_loads), MP_ROM_PTR(&json_loads_obj) },
    { MP_ROM_QSTR(MP_QSTR_load), MP_ROM_PTR(&json_load_obj) },
};
MP32_MODULE(json)
