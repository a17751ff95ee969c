# -*- test-case-name: txstore.test.unit.test_s3_xml -*-
"""
S3's XML, both ways: documents built with ElementTree (text escaped by it, never by hand) and
request bodies parsed with a refusing parser.

A request body (CreateBucketConfiguration, Delete, CompleteMultipartUpload, ACLs) comes from
the client, so it is parsed by expat with every way to reach outside the document turned off:
a ``<!DOCTYPE``, an entity declaration, an external entity reference or a processing
instruction other than the XML declaration makes the body `MalformedXML`. That closes XXE
(a ``SYSTEM "file:///…"`` entity) and entity expansion ("billion laughs") before any entity is
read, which is what defusedxml does for the standard library. Bodies are size-capped by the
caller before they get here.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element as _Element, SubElement, TreeBuilder, tostring
from xml.parsers import expat

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"


class UnsafeXML(ValueError):
    """The body is not well-formed, or declares what a safe parser refuses."""


def Element(tag: str, **attrib: str) -> _Element:
    return _Element(tag, attrib)


def sub(parent: _Element, tag: str, text: object = None) -> _Element:
    """A child element; ``text`` (when not None) as its text, ``str()`` of it."""
    child = SubElement(parent, tag)
    if text is not None:
        child.text = text if isinstance(text, str) else str(text)
    return child


def dumps(root: _Element, namespace: bool = True) -> bytes:
    """The document with its XML declaration; results carry S3's namespace, errors do not."""
    if namespace:
        root.set("xmlns", NAMESPACE)
    return tostring(root, encoding="UTF-8", xml_declaration=True)


def _refuse(*_args) -> None:
    raise UnsafeXML("DTDs, entities and processing instructions are not accepted")


def parse(data: bytes) -> _Element:
    """
    The root of ``data``, tags without their namespace (S3 bodies may or may not carry it).
    Raises `UnsafeXML` for anything not well-formed or not plain elements and text.
    """
    builder = TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    parser.ProcessingInstructionHandler = _refuse
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = lambda tag, attrs: builder.start(_local(tag), {_local(k): v for k, v in attrs.items()})
    parser.EndElementHandler = lambda tag: builder.end(_local(tag))
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
        return builder.close()
    except UnsafeXML:
        raise
    except (expat.ExpatError, AssertionError, ValueError) as err:
        raise UnsafeXML(str(err)) from None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def text_of(element: _Element, tag: str) -> str | None:
    """The text of ``element``'s first child ``tag`` ("" when empty), None without one."""
    child = element.find(tag)
    if child is None:
        return None
    return child.text or ""
